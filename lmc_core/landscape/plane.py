"""Two-dimensional loss landscapes: planes in parameter space and the loss / error surface on a grid over them.

A plane is theta(a, b) = centre + a * d1 + b * d2 over the *parameters* of a network; BatchNorm
buffers travel separately (see `evaluate_surface` for how they are chosen at each point). Four
kinds of plane are built here:

* `random_plane`: Li et al. (2018) filter-normalised Gaussian directions around one solution,
  mask-aware (directions masked before normalisation, so pruned weights stay exactly 0);
* `plane_through`: the plane through three solutions, in an orthonormal basis (parameter-norm units);
* `four_solution_plane`: the LMC paper's plane through four SGD solutions (McDermott & Cummings 2023,
  `multiple_lmc.py`): directions (t0 - t1) / 2 and (t3 - t2) / 2 around their midpoint;
* `pca_plane`: the top two principal directions of a training trajectory.

Planes are held in float64 and cast back to each tensor's dtype in `Plane.at`, so coordinates
are exact (the centre at (0, 0) is returned bitwise, and the four-solution plane's endpoints are
reproduced exactly). Grids are exact and symmetric (`grid_axis`), evaluated coarse to fine so a
preview is complete early. Evaluation (`landscape.evaluator`) runs a private copy of the model whose
parameters are rewritten in place per point (the caller's model is never touched), with per-point
BatchNorm re-estimation and the loop / vmap-batched strategies, timed and chosen per model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lmc_core.connectivity.path import apply_mask
from lmc_core.foundations.seeding import generator
from lmc_core.foundations.types import Masks, State

IGNORE_MODES = ("biasbn", "none")
_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
_FILTER_EPS = 1e-10  # Li et al.'s epsilon: a fully pruned filter (zero direction, zero weights) stays zero


# --------------------------------------------------------------------------- state helpers


def _is_buffer(key: str, t: torch.Tensor) -> bool:
    """True for BatchNorm statistics and any non-floating entry (the parts of a state_dict that are not parameters)."""
    return (not t.is_floating_point()) or key.rsplit(".", 1)[-1] in _BUFFER_SUFFIXES


def split_state(state: State) -> tuple[State, State]:
    """Return (parameters, buffers) of a state_dict; buffers are BN running statistics and non-floating entries."""
    params = {k: v for k, v in state.items() if not _is_buffer(k, v)}
    buffers = {k: v for k, v in state.items() if _is_buffer(k, v)}
    return params, buffers


def _f64(state: State) -> State:
    return {k: v.detach().to(torch.float64) for k, v in state.items()}


def _dot(a: State, b: State) -> float:
    return float(sum((a[k] * b[k]).sum() for k in a)) if a else 0.0


def _norm(a: State) -> float:
    return math.sqrt(max(_dot(a, a), 0.0))


def _combine(terms: Iterable[tuple[float, State]], keys: Iterable[str]) -> State:
    """Return sum_i c_i * s_i over `keys` (float64)."""
    terms = list(terms)
    out = {}
    for k in keys:
        acc: torch.Tensor | None = None
        for c, s in terms:
            acc = c * s[k] if acc is None else acc + c * s[k]
        assert acc is not None  # every caller passes two terms
        out[k] = acc
    return out


def _check_keys(states: list[State], names: list[str]) -> None:
    ref = states[0].keys()
    for s, name in zip(states[1:], names[1:], strict=True):  # one name per state (the callers' tuples; pca_plane checks)
        if s.keys() != ref:
            only_ref, only_s = sorted(ref - s.keys()), sorted(s.keys() - ref)
            raise ValueError(f"{name} has different keys from {names[0]}: only in {names[0]} {only_ref[:5]}, only in {name} {only_s[:5]}")
        for k in ref:
            if s[k].shape != states[0][k].shape:
                raise ValueError(f"{k}: shape {tuple(s[k].shape)} in {name} but {tuple(states[0][k].shape)} in {names[0]}")


def to_jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, torch.Tensor):
        return x.tolist()
    return x


# --------------------------------------------------------------------------- the plane


@dataclass
class Plane:
    """theta(a, b) = centre + a * d1 + b * d2 over the parameters (float64), with the models' coordinates in `points`.

    `buffers` are the centre's non-parameter entries (BN statistics), used by bn_mode="endpoint";
    `buffer_d1` / `buffer_d2`, when the plane is spanned by solutions, move the floating buffers by
    the same rule as the parameters (bn_mode="interpolate"). `masks` are re-applied by `at`.
    """

    centre: State
    d1: State
    d2: State
    kind: str
    info: dict[str, Any]
    points: dict[str, tuple[float, float]]
    dtypes: dict[str, torch.dtype] = field(default_factory=dict)
    buffers: State | None = None
    buffer_d1: State | None = None
    buffer_d2: State | None = None
    masks: Masks | None = None

    def at(self, a: float, b: float, masks: Masks | None = None) -> State:
        """Return the parameter state centre + a d1 + b d2 (each tensor in its original dtype), masked by `masks` or the plane's masks.

        (0, 0) returns the centre exactly; pruned weights are exactly +0 at every point.
        """
        a, b = float(a), float(b)
        out = {}
        for k, c in self.centre.items():
            v = c if a == 0.0 and b == 0.0 else c + a * self.d1[k] + b * self.d2[k]
            out[k] = v.to(self.dtypes.get(k, c.dtype), copy=True)
        return apply_mask(out, masks if masks is not None else self.masks)

    def buffers_at(self, a: float, b: float) -> State:
        """Return the buffers moved by the plane's rule (bn_mode="interpolate"); running variances are clamped at 0.

        Raises ValueError when the plane carries no buffer directions (random and PCA planes).
        """
        if self.buffers is None or self.buffer_d1 is None or self.buffer_d2 is None:
            raise ValueError(
                f"a {self.kind!r} plane has no direction for the BatchNorm statistics, so bn_mode='interpolate' is undefined; "
                "use bn_mode='reestimate' (with calibration inputs) or 'endpoint' (the centre's statistics)"
            )
        a, b = float(a), float(b)
        out = {}
        for k, c in self.buffers.items():
            if k not in self.buffer_d1:
                out[k] = c.clone()
                continue
            v = c.double() + a * self.buffer_d1[k] + b * self.buffer_d2[k]
            if k.endswith("running_var"):
                v = v.clamp_min(0.0)  # off the segment between solutions a variance can extrapolate below 0
            out[k] = v.to(c.dtype)
        return out

    def coordinates(self, state: State) -> tuple[tuple[float, float], float]:
        """Return the least-squares (a, b) of a parameter state in this plane and the relative residual
        ||t - at(a, b)|| / ||t - centre||.
        """
        t = _f64({k: state[k] for k in self.centre})
        off = {k: t[k] - self.centre[k] for k in self.centre}
        g11, g12, g22 = _dot(self.d1, self.d1), _dot(self.d1, self.d2), _dot(self.d2, self.d2)
        r1, r2 = _dot(self.d1, off), _dot(self.d2, off)
        sol = np.linalg.lstsq(np.array([[g11, g12], [g12, g22]]), np.array([r1, r2]), rcond=None)[0]
        a, b = float(sol[0]), float(sol[1])
        resid = {k: off[k] - a * self.d1[k] - b * self.d2[k] for k in off}
        scale = _norm(off)
        return (a, b), (_norm(resid) / scale if scale > 0 else 0.0)


def _buffers_f64(buffers: State) -> State:
    return {k: v.detach().double() for k, v in buffers.items() if v.is_floating_point()}


# --------------------------------------------------------------------------- planes


def _filter_normalise(d: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Return d rescaled per filter (dim-0 slice) to theta's filter norms (a 1-D tensor is one filter)."""
    if d.dim() <= 1:
        ratio: torch.Tensor = theta.norm() / (d.norm() + _FILTER_EPS)
        return d * ratio
    dn = d.flatten(1).norm(dim=1)
    tn = theta.flatten(1).norm(dim=1)
    scale: torch.Tensor = (tn / (dn + _FILTER_EPS)).view(-1, *([1] * (d.dim() - 1)))
    return d * scale


def random_plane(
    state: State,
    *,
    masks: Masks | None = None,
    seed: int = 0,
    ignore: str = "biasbn",
    orthogonalize: bool = False,
) -> Plane:
    """Return a filter-normalised random plane around `state` (Li et al. 2018), mask-aware and seeded.

    Directions are standard Gaussian (one seeded CPU generator per direction and tensor), masked
    before normalisation, then each filter (dim-0 slice of a >= 2-D weight) is rescaled to the norm
    of the same filter of theta (epsilon 1e-10, so fully pruned filters stay 0). With ignore="biasbn"
    every 1-D parameter (biases, norm-layer affine) gets a zero direction; with ignore="none" it is
    normalised as one vector. `orthogonalize` applies Gram-Schmidt to d2 against d1 after
    normalisation (d2's filter norms then no longer match theta's). info["cosine"] is cos(d1, d2)
    of the returned directions.
    """
    if ignore not in IGNORE_MODES:
        raise ValueError(f"ignore must be one of {IGNORE_MODES}, got {ignore!r}")
    params, buffers = split_state(state)
    if not params:
        raise ValueError("the state has no floating parameters to perturb")
    if masks:
        unknown = [k for k in masks if k not in params]
        if unknown:
            raise KeyError(f"mask keys not among the state's parameters: {unknown[:5]}")
    theta = _f64(apply_mask(dict(params), masks))
    dirs: list[State] = []
    for which in (1, 2):
        d: State = {}
        for k, t in theta.items():
            if t.dim() <= 1 and ignore == "biasbn":
                d[k] = torch.zeros_like(t)
                continue
            g = generator(seed, f"landscape:random_plane:d{which}:{k}")
            r = torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.device)
            if masks is not None and k in masks:
                r = torch.where(masks[k].to(t.device, torch.bool), r, torch.zeros((), dtype=r.dtype, device=r.device))
            d[k] = _filter_normalise(r, t)
        dirs.append(d)
    d1, d2 = dirs
    if orthogonalize:
        n11 = _dot(d1, d1)
        if n11 > 0:
            c = _dot(d1, d2) / n11
            d2 = {k: d2[k] - c * d1[k] for k in d2}
    n1, n2 = _norm(d1), _norm(d2)
    cosine = _dot(d1, d2) / (n1 * n2) if n1 > 0 and n2 > 0 else 0.0
    info = {
        "seed": int(seed),
        "normalisation": "filter",
        "ignore": ignore,
        "orthogonalized": bool(orthogonalize),
        "cosine": cosine,
        "norm_d1": n1,
        "norm_d2": n2,
        "norm_centre": _norm(theta),
        "masked": masks is not None,
    }
    return Plane(
        centre=_f64(params),
        d1=d1,
        d2=d2,
        kind="random",
        info=info,
        points={"centre": (0.0, 0.0)},
        dtypes={k: v.dtype for k, v in params.items()},
        buffers={k: v.detach().clone() for k, v in buffers.items()} if buffers else None,
        masks={k: v.bool() for k, v in masks.items()} if masks else None,
    )


def plane_through(t0: State, t1: State, t2: State, *, names: tuple[str, str, str] = ("t0", "t1", "t2")) -> Plane:
    """Return the plane through three states: centre t0, orthonormal basis of span(t1 - t0, t2 - t0) (Gram-Schmidt over all parameters).

    Coordinates are in parameter-norm units: t1 sits at (||t1 - t0||, 0) and t2 at (<t2 - t0, u1>, its
    distance from the line); `points` holds all three exactly. Floating buffers get the same linear
    combination, so bn_mode="interpolate" reproduces each model's statistics at its point.
    """
    p0, b0 = split_state(t0)
    p1, b1 = split_state(t1)
    p2, b2 = split_state(t2)
    _check_keys([p0, p1, p2], list(names))
    x0, x1, x2 = _f64(p0), _f64(p1), _f64(p2)
    e1 = {k: x1[k] - x0[k] for k in x0}
    e2 = {k: x2[k] - x0[k] for k in x0}
    n1 = _norm(e1)
    if n1 == 0.0:
        raise ValueError(f"{names[0]} and {names[1]} are identical: they do not span a direction")
    u1 = {k: v / n1 for k, v in e1.items()}
    p = _dot(e2, u1)
    v2 = {k: e2[k] - p * u1[k] for k in e2}
    h = _norm(v2)
    # Relative to the inputs' precision: float32 states that are collinear up to rounding count as collinear.
    tol = 100 * max(torch.finfo(v.dtype).eps for v in p0.values())
    if h <= tol * max(n1, _norm(e2)):
        raise ValueError(f"the three states are collinear: {names[2]} lies on the line through {names[0]} and {names[1]}")
    u2 = {k: v / h for k, v in v2.items()}
    info = {"basis": "orthonormal", "norm_t1_t0": n1, "norm_t2_t0": _norm(e2), "cosine": _dot(u1, u2), "cosine_edges": p / _norm(e2)}

    buffers = bd1 = bd2 = None
    if b0:
        f0, f1, f2 = _buffers_f64(b0), _buffers_f64(b1), _buffers_f64(b2)
        if f0.keys() == f1.keys() == f2.keys() and f0:
            bd1 = {k: (f1[k] - f0[k]) / n1 for k in f0}
            bd2 = {k: ((f2[k] - f0[k]) - p * bd1[k]) / h for k in f0}
        buffers = {k: v.detach().clone() for k, v in b0.items()}
    return Plane(
        centre=x0,
        d1=u1,
        d2=u2,
        kind="through",
        info=info,
        points={names[0]: (0.0, 0.0), names[1]: (n1, 0.0), names[2]: (p, h)},
        dtypes={k: v.dtype for k, v in p0.items()},
        buffers=buffers,
        buffer_d1=bd1,
        buffer_d2=bd2,
    )


def four_solution_plane(
    t0: State,
    t1: State,
    t2: State,
    t3: State,
    centre: str = "midpoint",
    *,
    names: tuple[str, str, str, str] = ("t0", "t1", "t2", "t3"),
) -> Plane:
    """Return the LMC paper's plane (McDermott & Cummings 2023, multiple_lmc.py): d1 = (t0 - t1) / 2, d2 = (t3 - t2) / 2.

    centre="midpoint" (distilled_loss_landscape.py) puts (t0 + t1) / 2 at the origin, so t0 is at
    (1, 0) and t1 at (-1, 0), exactly; centre="t0" (the current multiple_lmc.py) puts t0 at (0, 0)
    and t1 at (-2, 0). t2 and t3 are generally *off* the plane: their `points` are least-squares
    projections, info["residual"] gives each model's relative distance from the plane, and
    info["nominal"] the positions the paper plots them at ((0, -1) and (0, 1) around the midpoint,
    which hold when the pairs share a midpoint). Floating BN buffers follow the same rule (as in the paper).
    """
    if centre not in ("midpoint", "t0"):
        raise ValueError(f"centre must be 'midpoint' or 't0', got {centre!r}")
    split = [split_state(t) for t in (t0, t1, t2, t3)]
    ps = [s[0] for s in split]
    _check_keys(ps, list(names))
    x = [_f64(p) for p in ps]
    keys = list(x[0])
    d1 = _combine([(0.5, x[0]), (-0.5, x[1])], keys)
    d2 = _combine([(0.5, x[3]), (-0.5, x[2])], keys)
    c = _combine([(0.5, x[0]), (0.5, x[1])], keys) if centre == "midpoint" else x[0]

    buffers = bd1 = bd2 = None
    bs = [s[1] for s in split]
    if bs[0]:
        fs = [_buffers_f64(b) for b in bs]
        bkeys = list(fs[0])
        if all(f.keys() == fs[0].keys() for f in fs) and bkeys:
            bd1 = _combine([(0.5, fs[0]), (-0.5, fs[1])], bkeys)
            bd2 = _combine([(0.5, fs[3]), (-0.5, fs[2])], bkeys)
        buffers = {k: v.detach().clone() for k, v in bs[0].items()}
        if centre == "midpoint":
            for k in bkeys:
                buffers[k] = (fs[0][k] + fs[1][k]) / 2  # float64, so buffers_at(+-1, 0) gives t0's / t1's exactly
    shift = 0.0 if centre == "midpoint" else 1.0  # t0 is at (1 - shift, 0)
    plane = Plane(
        centre=c,
        d1=d1,
        d2=d2,
        kind="four_solution",
        info={},
        points={names[0]: (1.0 - shift, 0.0), names[1]: (-1.0 - shift, 0.0)},
        dtypes={k: v.dtype for k, v in ps[0].items()},
        buffers=buffers,
        buffer_d1=bd1,
        buffer_d2=bd2,
    )
    residual = {names[0]: 0.0, names[1]: 0.0}
    for name, p in ((names[2], ps[2]), (names[3], ps[3])):
        plane.points[name], residual[name] = plane.coordinates(p)
    n1, n2 = _norm(d1), _norm(d2)
    plane.info = {
        "centre": centre,
        "norm_d1": n1,
        "norm_d2": n2,
        "cosine": _dot(d1, d2) / (n1 * n2) if n1 > 0 and n2 > 0 else 0.0,
        "residual": residual,
        "nominal": {names[0]: (1.0 - shift, 0.0), names[1]: (-1.0 - shift, 0.0), names[2]: (-shift, -1.0), names[3]: (-shift, 1.0)},
    }
    return plane


def pca_plane(trajectory: list[State], *, centre: str = "final", names: list[str] | None = None) -> Plane:
    """Return the plane of the top two principal directions of a trajectory (Li et al. 2018, Sec. 7).

    Offsets t_i - centre (centre = the final state, or the mean) are centred and decomposed with an
    SVD; d1, d2 are the top two right singular vectors (unit norm, so coordinates are in parameter-norm
    units; sign fixed so each direction's largest-magnitude entry is positive). info["explained_variance"]
    holds the two variance ratios; `points` holds each checkpoint's projection ("ckpt0", ... or `names`).
    """
    if centre not in ("final", "mean"):
        raise ValueError(f"centre must be 'final' or 'mean', got {centre!r}")
    if len(trajectory) < 3:
        raise ValueError(f"a PCA plane needs at least 3 checkpoints, got {len(trajectory)}")
    names = list(names) if names is not None else [f"ckpt{i}" for i in range(len(trajectory))]
    if len(names) != len(trajectory):
        raise ValueError(f"{len(names)} names for {len(trajectory)} checkpoints")
    split = [split_state(t) for t in trajectory]
    ps = [s[0] for s in split]
    _check_keys(ps, names)
    keys = list(ps[0])
    flat = torch.stack([torch.cat([p[k].detach().double().flatten().cpu() for k in keys]) for p in ps])  # (N, P)
    c = flat[-1] if centre == "final" else flat.mean(dim=0)
    off = flat - c
    centred = off - off.mean(dim=0)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    var = s**2
    total = float(var.sum())
    if len(s) < 2 or float(s[1]) <= 1e-12 * max(float(s[0]), 1e-300):
        raise ValueError("the trajectory spans fewer than two directions: a PCA plane is undefined")
    basis = []
    for i in range(2):
        v = vh[i]
        if v[v.abs().argmax()] < 0:
            v = -v
        basis.append(v)
    coords = off @ torch.stack(basis).T  # (N, 2)

    def unflatten(vec: torch.Tensor) -> State:
        out, pos = {}, 0
        for k in keys:
            t = ps[0][k]
            out[k] = vec[pos : pos + t.numel()].view(t.shape).to(t.device)
            pos += t.numel()
        return out

    last_buffers = split[-1][1]
    return Plane(
        centre=unflatten(c),
        d1=unflatten(basis[0]),
        d2=unflatten(basis[1]),
        kind="pca",
        info={
            "centre": centre,
            "explained_variance": [float(var[0]) / total, float(var[1]) / total] if total > 0 else [0.0, 0.0],
            "singular_values": [float(v) for v in s[: min(len(s), 8)]],
            "checkpoints": len(trajectory),
        },
        points={n: (float(coords[i, 0]), float(coords[i, 1])) for i, n in enumerate(names)},
        dtypes={k: v.dtype for k, v in ps[0].items()},
        buffers={k: v.detach().clone() for k, v in last_buffers.items()} if last_buffers else None,
    )
