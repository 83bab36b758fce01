"""The mask stage kind: a mask source's round-r mask, with the training points spent finding it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmc_core.foundations.events import Callback
from lmc_core.foundations.storage import save_tensors
from lmc_core.prune.magnitude import kept_entries, layer_sparsity, sparsity
from lmc_core.prune.sources import get_mask_source
from lmc_core.studies.plan import Stage
from lmc_core.studies.run import KEPT_FILE, MASKS_FILE, Run
from lmc_core.studies.stages import StageKind


def run_mask(run: Run, stage: Stage, out: Path, callback: Callback) -> dict[str, Any]:
    """Build and save the mask `stage.params` names: source, rewind step k and round.

    Under `pruning.rewind = "weights"` it also saves the pruned network's biases, norms and buffers (`kept.safetensors`),
    which this mask's copies and the source's next round start from instead of theta_k's.
    """
    p = stage.params
    found = get_mask_source(p["source"]).find(run, p["k"], p["round"], callback)
    save_tensors(out / MASKS_FILE, found.masks)
    info = {"sparsity": sparsity(found.masks), "layer_sparsity": layer_sparsity(found.masks), **found.info}
    if run.cfg.pruning.rewind == "weights" and found.pruned is not None:
        kept = kept_entries(found.pruned, run.template)
        save_tensors(out / KEPT_FILE, kept)
        info["kept"] = sorted(kept)
    return info


MASK = StageKind(run=run_mask)
