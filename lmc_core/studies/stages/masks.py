"""The mask stage kind: a mask source's round-r mask, with the training points spent finding it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmc_core.foundations.events import Callback
from lmc_core.foundations.storage import save_tensors
from lmc_core.prune.magnitude import layer_sparsity, sparsity
from lmc_core.prune.sources import get_mask_source
from lmc_core.studies.plan import Stage
from lmc_core.studies.run import Run
from lmc_core.studies.stages import StageKind


def run_mask(run: Run, stage: Stage, out: Path, callback: Callback) -> dict[str, Any]:
    """Build and save the mask `stage.params` names: source, rewind step k and round."""
    p = stage.params
    masks, spent = get_mask_source(p["source"]).build(run, p["k"], p["round"], callback)
    save_tensors(out / "masks.safetensors", masks)
    return {"sparsity": sparsity(masks), "layer_sparsity": layer_sparsity(masks), **spent}


MASK = StageKind(run=run_mask)
