"""The distances stage kind: how far apart the masks of different mask sources are at the same round (Hamming distance).

The paper's code measures mask Hamming distances (calculate_hamming.py); here every two mask sources' round-r masks found
with the same rewind step are compared, over the prunable weights. Each row names both masks by (source, init): a study
has one init today (`seed`), so both inits are that seed; replicated inits would add rows comparing one source's masks
across inits in the same stage, with no change to the row's fields.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path
from typing import Any

from lmc_core.foundations.events import Callback
from lmc_core.foundations.types import Masks
from lmc_core.studies.plan import Stage
from lmc_core.studies.run import Run
from lmc_core.studies.stages import StageKind


def mask_distance(a: Masks, b: Masks) -> dict[str, Any]:
    """Return the Hamming distance between two masks of the same network, over every prunable weight.

    differ = weights kept by one mask and pruned by the other; hamming = differ / total; overlap = weights both keep,
    jaccard = overlap / weights either keeps (1 when neither keeps any); chance = the hamming two independent, uniformly
    random masks with the same kept count per layer would have on average (sum over layers of kA + kB - 2 kA kB / n,
    over total), the level that says "no more alike than chance"; layer_hamming = the fraction per layer.
    """
    if a.keys() != b.keys():
        only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
        raise ValueError(f"the masks cover different layers: only in the first {only_a[:5]}, only in the second {only_b[:5]}")
    differ = total = overlap = union = kept_a = kept_b = 0
    chance = 0.0
    layers: dict[str, float] = {}
    for name in a:
        ma, mb = a[name].detach().cpu().bool(), b[name].detach().cpu().bool()
        if ma.shape != mb.shape:
            raise ValueError(f"{name}: mask shapes differ, {tuple(ma.shape)} and {tuple(mb.shape)}; they are not masks of one network")
        n, ka, kb = ma.numel(), int(ma.sum()), int(mb.sum())
        d = int((ma != mb).sum())
        differ, total, kept_a, kept_b = differ + d, total + n, kept_a + ka, kept_b + kb
        overlap += int((ma & mb).sum())
        union += int((ma | mb).sum())
        chance += ka + kb - 2.0 * ka * kb / n if n else 0.0
        layers[name] = d / n if n else 0.0
    if total == 0:
        raise ValueError("the masks hold no prunable weights")
    return {
        "differ": differ,
        "total": total,
        "hamming": differ / total,
        "kept_a": kept_a,
        "kept_b": kept_b,
        "overlap": overlap,
        "jaccard": overlap / union if union else 1.0,
        "chance": chance / total,
        "layer_hamming": layers,
    }


def run_distances(run: Run, stage: Stage, out: Path, callback: Callback) -> dict[str, Any]:
    """Compare every two mask sources' masks of round `round` (rewind step `k`); return one row per pair of masks."""
    p = stage.params
    init = run.cfg.seed  # every mask source starts from the study's one init
    masks = {source: run.load_masks(mid) for source, mid in p["masks"].items()}
    rows = []
    for sa, sb in combinations(p["masks"], 2):
        rows.append(
            {
                "rewind_step": p["k"],
                "round": p["round"],
                "source_a": sa,
                "source_b": sb,
                "mask_a": p["masks"][sa],
                "mask_b": p["masks"][sb],
                "init_a": init,
                "init_b": init,
                **mask_distance(masks[sa], masks[sb]),
            }
        )
    return {"rows": rows}


DISTANCES = StageKind(run=run_distances)
