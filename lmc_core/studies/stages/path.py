"""The path stage kind: the linear path between a pair's two copies and its barriers (Frankle et al. 2020, section 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmc_core.connectivity.path import alpha_grid, evaluate_path
from lmc_core.foundations.events import Callback
from lmc_core.foundations.layout import DENSE, copies_key
from lmc_core.foundations.storage import save_arrays
from lmc_core.studies.plan import Stage
from lmc_core.studies.run import Run
from lmc_core.studies.stages import StageKind


def run_path(run: Run, stage: Stage, out: Path, callback: Callback) -> dict[str, Any]:
    """Evaluate the path between the pair's copies on the study's splits; save the curves, return the barriers."""
    p = stage.params
    a, b = run.cfg.stability.pairs[p["pair"]]
    masks = None if p["mask"] == DENSE else run.load_masks(p["mask"])
    st = run.cfg.stability
    ckey = copies_key(p["mask"], p["k"], p["pair"])
    result = evaluate_path(
        run.template,
        run.to_device(run.load_state(ckey, "a")),
        run.to_device(run.load_state(ckey, "b")),
        run.splits(),
        alpha_grid(st.alphas),
        bn_mode=st.bn_mode,
        calibration=run.data.x_train,
        bn_batches=st.bn_batches,
        masks=(masks, masks),
        batch_size=run.cfg.train.eval_batch_size,
    )
    save_arrays(out / "path.npz", result.to_arrays())
    return {"seeds": [a, b], "bn_mode": result.bn_mode, "barriers": result.barriers()}


PATH = StageKind(run=run_path)
