"""The sharpness stage kind: does a mask source prune sharp weights?

The paper's claim "distilled pruning discards parameters that contribute to the sharpness of the loss landscape"
(McDermott & Cummings 2023; the statistic its figure shows is not recoverable from the authors' code) is tested
here on one *common network* per (rewind step k, round r), so that every source's removed weights are read on the
same curvature:

* the common network is copy A of pair 0 of real IMP's round r-1 subnetwork (`reference: previous`, the network IMP
  prunes at round r) or of the trained dense network (`reference: dense`);
* its Hessian diagonal H_ii is taken on the first `examples` training examples over *every* prunable weight (no
  mask: the dense-subspace Hessian), so a weight the common network has already pruned still has a value, the
  curvature along that weight at w_i = 0;
* source s removes R_s = (kept by s at round r-1) and not (kept by s at round r), its own two masks (for a random
  mask the two rounds are independent draws, so weights can also come back: `revived`);
* the null: `random_draws` random subsets of s's round r-1 kept weights with R_s's per-layer counts, so a layer
  whose weights are all sharp cannot pass for a choice of sharp weights;
* per statistic (mean and median H_ii over R_s, the fraction of R_s above the common network's 90th percentile of
  H_ii), the observed value, the null's mean and central 95 % interval, and one-sided permutation p-values
  (1 + #{null >= observed}) / (1 + draws) ("sharper than random") and the same with <= ("flatter than random").
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmc_core.foundations.config import SharpnessSpec, StudyConfig
from lmc_core.foundations.events import Callback, Event
from lmc_core.foundations.layout import DENSE, copies_key, mask_id, mask_key, sharpness_key
from lmc_core.foundations.seeding import generator
from lmc_core.foundations.storage import save_arrays
from lmc_core.foundations.types import Masks
from lmc_core.hessian.diagonal import hessian_diagonal
from lmc_core.hessian.operator import HessianOperator
from lmc_core.prune.magnitude import prunable_names
from lmc_core.prune.sources import get_mask_source
from lmc_core.prune.sources.imp import IMP
from lmc_core.studies.plan import Stage, Subnetwork
from lmc_core.studies.run import Run
from lmc_core.studies.stages import StageKind

STATISTICS = ("mean", "median", "top_decile_fraction")
TOP_QUANTILE = 0.9
NULL_LEVEL = 0.95
# Elements of one block of random keys (draws x candidate weights): bounds memory, not the result.
_BLOCK = 1 << 22


# ----------------------------------------------------------------------------- the common network's diagonal


def common_diagonal(op: HessianOperator, spec: SharpnessSpec) -> tuple[np.ndarray, dict[str, Any], np.ndarray | None]:
    """Return (H_ii over the operator's coordinates as float64, what it is, per-entry standard errors or None when exact)."""
    diag = hessian_diagonal(op, spec.diagonal, spec.diagonal_samples, seed=spec.seed)
    values, method = diag.values, diag.method
    stderr = None if diag.stderr is None else diag.stderr.detach().double().cpu().numpy()
    about = {
        "method": method,
        "estimate": spec.diagonal != "exact",
        "samples": spec.diagonal_samples if spec.diagonal != "exact" else None,
        "examples": op.num_examples,
        "batch": f"the first {op.num_examples} training examples, no augmentation",
        "mode": op.mode,
        "subspace": "dense: every prunable weight, pruned ones of the common network included (at w = 0)",
        "coordinates": op.dim,
        "hvps": op.hvps,
    }
    return values.detach().double().cpu().numpy(), about, stderr


def flat_mask(masks: Masks, names: list[str]) -> np.ndarray:
    """Return the masks of `names`, flattened and concatenated in that order (the operator's coordinate order)."""
    missing = [n for n in names if n not in masks]
    if missing:
        raise KeyError(f"mask has no entry for {missing[:3]}; expected one per prunable weight of the model")
    return np.concatenate([masks[n].detach().cpu().numpy().astype(bool).reshape(-1) for n in names])


# ----------------------------------------------------------------------------- removal statistics


def statistics(values: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    """Return each statistic of every row of `values` (draws, removed): mean, median, fraction above `threshold`."""
    return {
        "mean": values.mean(axis=1),
        "median": np.median(values, axis=1),
        "top_decile_fraction": (values > threshold).mean(axis=1),
    }


def log_edges(diag: np.ndarray, bins: int) -> np.ndarray:
    """Return `bins` + 1 evenly spaced edges in log10 H_ii spanning the positive entries of `diag` (0..1 when there are none)."""
    positive = diag[diag > 0]
    if positive.size == 0:
        return np.linspace(0.0, 1.0, bins + 1)
    lo, hi = float(np.log10(positive.min())), float(np.log10(positive.max()))
    if hi <= lo:  # a single value: one unit-wide range around it
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Return (rows, bins) counts of log10 of each row's positive values, numpy.histogram's bins (the last one closed)."""
    rows, bins = values.shape[0], len(edges) - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(values > 0, np.log10(np.where(values > 0, values, 1.0)), np.nan)
    idx = np.searchsorted(edges, logs, side="right") - 1
    idx = np.where(logs == edges[-1], bins - 1, idx)
    ok = np.isfinite(logs) & (idx >= 0) & (idx < bins)
    flat = (np.arange(rows)[:, None] * bins + idx)[ok]
    return np.bincount(flat, minlength=rows * bins).reshape(rows, bins)


def _p_values(observed: float, null: np.ndarray) -> tuple[float, float]:
    """Return one-sided permutation p-values (greater, less); values within rounding of `observed` count as ties."""
    tol = 1e-12 * max(1.0, abs(observed))
    draws = null.size
    return (1 + int((null >= observed - tol).sum())) / (1 + draws), (1 + int((null <= observed + tol).sum())) / (1 + draws)


def removal_statistics(
    diag: np.ndarray,
    sizes: list[int],
    previous: np.ndarray,
    current: np.ndarray,
    *,
    threshold: float,
    edges: np.ndarray,
    draws: int,
    seed: int,
    purpose: str,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Compare H_ii of the weights kept in `previous` and pruned in `current` with random removals; return (numbers, arrays).

    `diag`, `previous` and `current` are flat over the layers whose sizes are `sizes`. Each random draw takes, in
    every layer, as many weights as the source removed there, uniformly without replacement from that layer's
    weights kept in `previous`. Numbers: counts, and per statistic the observed value, the null mean, its central
    95 % interval and the one-sided p-values. Arrays: the removed flat indices and values, the histogram counts on
    `edges` with the null's per-bin mean and pointwise 95 % band, and every draw's statistics.
    """
    if not (diag.shape == previous.shape == current.shape) or diag.ndim != 1 or sum(sizes) != diag.size:
        raise ValueError(f"diag, previous and current must be flat vectors of the layers' {sum(sizes)} weights")
    removed = previous & ~current
    index = np.flatnonzero(removed)
    values = diag[index]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    per_layer = [int(removed[a:b].sum()) for a, b in itertools.pairwise(offsets)]
    gen = generator(seed, purpose)
    null: dict[str, list[np.ndarray]] = {s: [] for s in STATISTICS}
    band_rows: list[np.ndarray] = []
    if index.size:
        pools = [np.flatnonzero(previous[a:b]) + a for a, b in itertools.pairwise(offsets)]
        width = max(max(p.size for p in pools), index.size)
        chunk = max(1, min(draws, _BLOCK // max(1, width)))
        done = 0
        while done < draws:
            c = min(chunk, draws - done)
            parts = []
            for pool, n in zip(pools, per_layer, strict=True):
                if n == 0:
                    continue
                # The n largest of uniform keys: a uniform n-subset of the pool, one row per draw.
                keys = torch.rand(c, pool.size, generator=gen, dtype=torch.float64)
                pick = torch.topk(keys, n, dim=1, sorted=False).indices.numpy()
                parts.append(diag[pool[pick]])
            sample = np.concatenate(parts, axis=1)
            for name, stat in statistics(sample, threshold).items():
                null[name].append(stat)
            band_rows.append(bin_counts(sample, edges))
            done += c
    observed = statistics(values[None, :], threshold) if index.size else None
    numbers: dict[str, Any] = {
        "removed": int(index.size),
        "removed_per_layer": per_layer,
        "revived": int((~previous & current).sum()),
        "candidates": int(previous.sum()),
        "nonpositive": int((values <= 0).sum()),
        "random_draws": draws if index.size else 0,
        "statistics": {},
    }
    arrays: dict[str, np.ndarray] = {
        "removed_index": index.astype(np.int64),
        "removed_values": values,
        "counts": bin_counts(values[None, :], edges)[0],
    }
    lo, hi = (1 - NULL_LEVEL) / 2, 1 - (1 - NULL_LEVEL) / 2
    if observed is not None:
        band = np.concatenate(band_rows, axis=0)
        arrays["band_mean"] = band.mean(axis=0)
        arrays["band_low"], arrays["band_high"] = np.quantile(band, [lo, hi], axis=0)
        for name in STATISTICS:
            draws_of = np.concatenate(null[name])
            obs = float(observed[name][0])
            greater, less = _p_values(obs, draws_of)
            q = np.quantile(draws_of, [lo, hi])
            numbers["statistics"][name] = {
                "observed": obs,
                "null_mean": float(draws_of.mean()),
                "null_interval": [float(q[0]), float(q[1])],
                "p_greater": greater,
                "p_less": less,
            }
            arrays[f"null_{name}"] = draws_of
    else:
        numbers["statistics"] = dict.fromkeys(STATISTICS)
    return numbers, arrays


# ----------------------------------------------------------------------------- the stage


def reference_mask(cfg: StudyConfig, k: int, r: int) -> str:
    """Return the mask id of the common network of round r: real IMP's round r-1 mask, or the dense mask."""
    spec = cfg.analysis.sharpness
    assert spec is not None
    return mask_id("imp", k, r - 1) if spec.reference == "previous" else DENSE


def previous_mask(source: str, k: int, r: int) -> str:
    """Return the mask id source's round r starts from (its own round r-1; a combined source's first round: distilled's)."""
    src = get_mask_source(source)
    return src.previous(k, r) if isinstance(src, IMP) else mask_id(source, k, r - 1)


def run_sharpness(run: Run, stage: Stage, out: Path, callback: Callback) -> dict[str, Any]:
    """Read the common network's Hessian diagonal at every source's round-r removals; save the arrays, return the numbers."""
    p, spec = stage.params, run.cfg.analysis.sharpness
    assert spec is not None  # planned only when configured
    k, r, ref = p["k"], p["round"], p["reference_mask"]
    total = len(p["sources"]) + 1
    model = run.fresh_model()
    network = copies_key(ref, k, 0)
    model.load_state_dict(run.load_state(network, "a"))
    names = prunable_names(model)
    batch = (run.data.x_train[: spec.examples], run.data.y_train[: spec.examples])
    op = HessianOperator(model, [batch], mode=spec.mode, parameters=names)
    # The operator orders coordinates as named_parameters(); masks are flattened in that same order.
    names = op.names
    diag, about, stderr = common_diagonal(op, spec)
    callback(Event(stage.key, 1, total, {"diagonal_sum": float(diag.sum())}))
    sizes = list(op.sizes)
    threshold = float(np.quantile(diag, TOP_QUANTILE))
    edges = log_edges(diag, spec.bins)
    in_reference = flat_mask(run.load_masks(ref), names)
    arrays: dict[str, np.ndarray] = {"diagonal": diag, "edges": edges}
    if stderr is not None:
        arrays["diagonal_stderr"] = stderr
    removal: dict[str, Any] = {}
    for i, source in enumerate(p["sources"]):
        prev, cur = previous_mask(source, k, r), mask_id(source, k, r)
        numbers, source_arrays = removal_statistics(
            diag,
            sizes,
            flat_mask(run.load_masks(prev), names),
            flat_mask(run.load_masks(cur), names),
            threshold=threshold,
            edges=edges,
            draws=spec.random_draws,
            seed=spec.seed,
            purpose=f"sharpness-k{k}-r{r}-{source}",
        )
        numbers["outside_reference"] = int((~in_reference[source_arrays["removed_index"]]).sum())
        removal[source] = {"previous_mask": prev, "mask": cur, **numbers}
        arrays.update({f"{name}__{source}": a for name, a in source_arrays.items()})
        callback(Event(stage.key, i + 2, total, {"removed": numbers["removed"]}, message=source))
    save_arrays(out / "sharpness.npz", arrays)
    return {
        "reference_network": network,
        "reference_copy": "a",
        "diagonal": about,
        "layers": names,
        "layer_sizes": sizes,
        "top_decile_threshold": threshold,
        "null_level": NULL_LEVEL,
        "random_draws": spec.random_draws,
        "seed": spec.seed,
        "bins": spec.bins,
        "removal": removal,
    }


def plan_sharpness(cfg: StudyConfig, s: Subnetwork, pair: int) -> Stage | None:
    """Return the sharpness stage of (s.k, s.round) when `analysis.sharpness` is configured and s.round >= 1.

    One stage per (k, round), whatever the subnetwork or pair that asks: it covers every analysed source of that
    round and reads one common network, pair 0's copy A (the copy IMP prunes). It needs that copy and each source's
    masks of rounds r-1 and r.
    """
    spec, a = cfg.analysis.sharpness, cfg.analysis
    if spec is None or s.round == 0:
        return None
    k, r = s.k, s.round
    sources = [
        name
        for name in cfg.pruning.mask_sources
        if r in get_mask_source(name).rounds(cfg) and (a.mask_sources is None or name in a.mask_sources)
    ]
    ref = reference_mask(cfg, k, r)
    deps = [copies_key(ref, k, 0)] + ([mask_key(ref)] if ref != DENSE else [])
    for name in sources:
        for mid in (previous_mask(name, k, r), mask_id(name, k, r)):
            if mid != DENSE and mask_key(mid) not in deps:
                deps.append(mask_key(mid))
    params = {"k": k, "round": r, "reference": spec.reference, "reference_mask": ref, "sources": sources}
    return Stage(sharpness_key(k, r), "sharpness", tuple(deps), params)


SHARPNESS = StageKind(run=run_sharpness, plan=plan_sharpness)
