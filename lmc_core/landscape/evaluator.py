"""Evaluating many points theta(a, b) = c + a d1 + b d2 of a plane with as little per-point work as possible.

`PlaneEvaluator` owns a private copy of the network whose parameters are views of one flat buffer.
A point costs three vector operations on the whole parameter vector (float64 c + a d1 + b d2, cast
into the buffer) and an ordinary forward: no state dicts, no functional_call, no train/eval toggling,
which is what a Python loop over parameter dicts spends most of its time on for small networks.

Two ways to run a set of points:
* `evaluate_loop`: one point per forward (the fastest on CPU for convolutional nets and for batches
  of hundreds of rows, measured: docs/performance.md);
* `evaluate_stacked`: a chunk of points in one `torch.vmap` pass over stacked parameters, built as
  one (C, N) tensor c + a d1 + b d2 (wins for small dense nets on small batches).

First-layer reuse: on a fixed batch the first Conv/Linear's output is affine in (a, b) (the layer is
linear in its weight and bias, and masks are fixed), z(a, b) = z0 + a z1 + b z2, so its three parts
are computed once per batch for the whole surface and each point pays two axpys instead of the layer.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lmc_core.connectivity.batchnorm import bn_buffer_keys, make_worker
from lmc_core.foundations.types import Batch, Masks, Splits, State
from lmc_core.landscape import fused_chain
from lmc_core.landscape.plane import Plane
from lmc_core.models import PRUNABLE_TYPES, prunable_modules

Row = dict[str, tuple[float, float]]
REUSE_BUDGET_BYTES = 512 * 2**20  # cached first-layer parts (3 per batch); beyond this, reuse is switched off
GROUP_POINTS = 4  # points per fused forward (strategy "batched" on a fused conv net)


class _Injected(nn.Module):
    """Stands in for the first Conv/Linear: returns the pre-computed output `z` of the current point."""

    def __init__(self) -> None:
        super().__init__()
        self.z: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert self.z is not None  # set before every forward that reaches it
        return self.z


class _StopForward(Exception):
    pass


class _Reuse(TypedDict):
    """First-layer reuse: the layer, its centre/d1/d2 parameters, their outputs per batch, and its stand-in."""

    name: str
    layer: nn.Module
    cache: dict[int, tuple[torch.Tensor, ...]]  # id(batch) -> (z0, z1, z2)
    parts: list[dict[str, torch.Tensor]]
    injected: _Injected


def first_layer_name(model: nn.Module) -> str:
    """Return the module name of the first Conv/Linear, checking that no module with parameters or buffers precedes it.

    Raises ValueError otherwise (e.g. a BatchNorm before the first layer): its input would then
    depend on the point, and the output would no longer be affine in (a, b).
    """
    layers = prunable_modules(model)
    if not layers:
        raise ValueError("the model has no Conv/Linear layer: first-layer reuse does not apply")
    first_name, first = layers[0]
    if not first_name:
        raise ValueError("the model is a single Conv/Linear layer: there is no rest of the network to reuse its output for")
    for name, m in model.named_modules():
        if m is first:
            break
        if next(m.children(), None) is None and (
            next(m.parameters(recurse=False), None) is not None or next(m.buffers(recurse=False), None) is not None
        ):
            raise ValueError(
                f"first-layer reuse needs the first Conv/Linear ({first_name!r}) to see the raw input, but {name!r} "
                f"({type(m).__name__}, with parameters or statistics) comes before it; evaluate without reuse_first_layer"
            )
    return first_name


def _masked(t: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    # where(), not multiplication: -w * 0 is -0.0 and nan * 0 is nan; pruned weights must be exactly +0.
    return t if mask is None else torch.where(mask.to(t.device, torch.bool), t, torch.zeros((), dtype=t.dtype, device=t.device))


@dataclass(frozen=True)
class EvaluatorSettings:
    """How a PlaneEvaluator evaluates: masks, the resolved BatchNorm mode and its inputs, and the optional fast paths.

    `base` holds the buffers every point starts from (the centre's BatchNorm statistics when the
    plane carries them, else the template's); `calibration` the batches "reestimate" runs per point.
    """

    mode: str
    base: State
    masks: Masks | None = None
    calibration: Sequence[torch.Tensor] = ()
    reuse_first_layer: bool = False
    fused: bool = True


class PlaneEvaluator:
    """Loss and error at points of a plane, on a private network whose parameters are rewritten in place per point.

    `mode` is the resolved BatchNorm mode: "none" / "endpoint" (the buffers of `base` everywhere),
    "interpolate" (`buffers_at(a, b)` per point) or "reestimate" (fresh cumulative statistics from
    `calibration` per point, as `connectivity.batchnorm.reestimate_bn`). Masked entries of the centre and both
    directions are +0, so every pruned weight is exactly +0 at every point.
    """

    def __init__(self, model: nn.Module, plane: Plane, settings: EvaluatorSettings):
        centre, d1, d2, dtypes = plane.centre, plane.d1, plane.d2, plane.dtypes
        base, mode = settings.base, settings.mode
        self.mode = mode
        self.buffers_at = plane.buffers_at
        self.calibration = list(settings.calibration)
        self.worker = make_worker(model, reestimate=mode == "reestimate")
        self.params = dict(self.worker.named_parameters())
        masks = settings.masks or {}
        device = next(iter(self.params.values())).device
        self.names = list(self.params)
        self.c, self.d1, self.d2 = (
            torch.cat([_masked(src[k].detach().to(device, torch.float64), masks.get(k)).reshape(-1) for k in self.names])
            for src in (centre, d1, d2)
        )
        self.shapes: list[tuple[int, ...]] = [self.params[k].shape for k in self.names]
        self.numels = [self.params[k].numel() for k in self.names]
        self.dtypes = [dtypes.get(k, self.params[k].dtype) for k in self.names]
        self._tmp = torch.empty_like(self.c)
        # One flat buffer per dtype would need index bookkeeping; nets are single-dtype in practice, so a mixed
        # net simply takes the per-tensor copy path in `_set`.
        self.flat = torch.empty(self.c.numel(), dtype=self.dtypes[0], device=device) if len(set(self.dtypes)) == 1 else None
        off = 0
        for k, n, shape in zip(self.names, self.numels, self.shapes, strict=True):  # all three per name
            p = self.params[k]
            p.requires_grad_(False)
            if self.flat is not None:
                p.data = self.flat[off : off + n].view(shape)
            off += n
        self.buffers = dict(self.worker.named_buffers())
        with torch.no_grad():
            for k, b in self.buffers.items():
                if k in base:
                    b.copy_(base[k])
        self.bn_keys = set(bn_buffer_keys(self.worker))
        self.bns = [m for m in self.worker.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        self.channels_last = any(isinstance(m, nn.Conv2d) for m in self.worker.modules())
        if self.channels_last:
            self.calibration = [b.contiguous(memory_format=torch.channels_last) if b.dim() == 4 else b for b in self.calibration]
        self.reuse: _Reuse | None = None
        self.reuse_note = "off"
        if settings.reuse_first_layer:
            self._setup_reuse(centre, d1, d2, masks, dtypes)
        self.plan: list[fused_chain.Step] | None = None
        self.plan_note = "off"
        if settings.fused and self.reuse is None:
            self.plan = fused_chain.build(self.worker)
            if self.plan is not None:
                self.plan_params = fused_chain.param_names(self.plan)
                self.plan_buffers = fused_chain.bn_buffer_names(self.plan)
                self.plan_rows: dict[int, int] = {}
                self.plan_note = "pending"

    # ---- first-layer reuse ------------------------------------------------------------------
    def _setup_reuse(self, centre: State, d1: State, d2: State, masks: Masks, dtypes: dict[str, torch.dtype]) -> None:
        name = first_layer_name(self.worker)
        layer = copy.deepcopy(self.worker.get_submodule(name))
        assert isinstance(layer, PRUNABLE_TYPES)  # first_layer_name names a Conv/Linear
        prefix = f"{name}."
        keys = {k[len(prefix) :]: k for k in self.names if k.startswith(prefix)}
        parts: list[dict[str, torch.Tensor]] = []
        for src in (centre, d1, d2):
            part = {}
            for short, full in keys.items():
                t = _masked(src[full].detach().to(layer.weight.device, torch.float64), masks.get(full))
                part[short] = t.to(dtypes.get(full, layer.weight.dtype))
            parts.append(part)
        self.reuse = {"name": name, "layer": layer, "cache": {}, "parts": parts, "injected": _Injected()}
        parent_name, _, child = name.rpartition(".")
        self._swap = (self.worker.get_submodule(parent_name) if parent_name else self.worker, child, self.worker.get_submodule(name))
        self.reuse_note = "on"

    def _layer_input(self, xb: torch.Tensor) -> torch.Tensor:
        assert self.reuse is not None
        captured: list[torch.Tensor] = []

        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            captured.append(args[0])
            raise _StopForward

        original = self._swap[2]
        handle = original.register_forward_pre_hook(hook)
        parent, child, _ = self._swap
        setattr(parent, child, original)
        try:
            self.worker(xb)
        except _StopForward:
            pass
        finally:
            handle.remove()
            setattr(parent, child, self.reuse["injected"])
        if not captured:
            raise RuntimeError(f"the first layer {self.reuse['name']!r} was never called: first-layer reuse does not apply to this model")
        return captured[0]

    def prepare(self, splits: Splits, batch_size: int) -> None:
        """Check the fused plan on the first batch (when there is one); cache the first layer's parts (when reuse is on and fits)."""
        if self.plan is not None:
            self._check_plan(splits, batch_size)
        if self.reuse is None:
            return
        batches = [xb for x, y in splits.values() for xb, _ in self._batches(x, y, batch_size)] + self.calibration
        need = 0
        with torch.no_grad():
            parent, child, original = self._swap
            setattr(parent, child, self.reuse["injected"])
            for xb in batches:
                u = self._layer_input(xb)
                out_numel = functional_call(self.reuse["layer"], self.reuse["parts"][0], (u[:1],)).numel() * len(xb)
                need += 3 * out_numel * u.element_size()
            if need > REUSE_BUDGET_BYTES:
                setattr(parent, child, original)
                self.reuse = None
                self.reuse_note = f"off (its cache would need {need / 2**20:.0f} MiB > {REUSE_BUDGET_BYTES / 2**20:.0f} MiB)"
                return
            for xb in batches:
                u = self._layer_input(xb)
                self.reuse["cache"][id(xb)] = tuple(functional_call(self.reuse["layer"], part, (u,)) for part in self.reuse["parts"])

    def _z(self, xb: torch.Tensor, a: float, b: float) -> torch.Tensor:
        assert self.reuse is not None
        z0, z1, z2 = self.reuse["cache"][id(xb)]
        return torch.add(z0, z1, alpha=a).add_(z2, alpha=b)

    # ---- one point ------------------------------------------------------------------------------
    @torch.no_grad()
    def _set(self, a: float, b: float) -> None:
        if a == 0.0 and b == 0.0:
            self._tmp.copy_(self.c)  # the centre bitwise
        else:
            torch.add(self.c, self.d1, alpha=a, out=self._tmp)
            self._tmp.add_(self.d2, alpha=b)
        if self.flat is not None:
            self.flat.copy_(self._tmp)
        else:
            for k, piece in zip(self.names, torch.split(self._tmp, self.numels), strict=True):  # one piece per name
                self.params[k].copy_(piece.view(self.params[k].shape))
        if self.mode == "interpolate":
            for k, v in self.buffers_at(a, b).items():
                if k in self.bn_keys:
                    self.buffers[k].copy_(v)
        elif self.mode == "reestimate":
            self._reestimate(a, b)

    def _reestimate(self, a: float, b: float) -> None:
        for m in self.bns:
            m.reset_running_stats()
            m.train()
        try:
            for xb in self.calibration:
                if self.reuse is not None:
                    self.reuse["injected"].z = self._z(xb, a, b)
                self.worker(xb)
        finally:
            for m in self.bns:
                m.eval()

    def _batches(self, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> list[Batch]:
        # The same tensor objects every call, so the first-layer cache (keyed by identity) finds them.
        key = (id(x), batch_size)
        cache: dict[tuple[int, int], tuple[torch.Tensor, list[Batch]]] = self.__dict__.setdefault("_split_batches", {})
        if key not in cache:
            xs = torch.split(x, batch_size)
            if self.channels_last and x.dim() == 4:
                # Measured on the team's CPU (oneDNN): a 3-conv BN net's forward 1.6x faster with NHWC inputs and
                # NCHW weights; converting the weights too was slower. Same arithmetic up to summation order.
                xs = tuple(b.contiguous(memory_format=torch.channels_last) for b in xs)
            cache[key] = (x, list(zip(xs, torch.split(y, batch_size), strict=True)))  # inputs and labels: equal lengths
        return cache[key][1]

    @torch.no_grad()
    def evaluate_loop(self, points: Sequence[tuple[float, float]], splits: Splits, batch_size: int) -> list[Row]:
        """Return, per (a, b), split -> (mean loss, error), one forward per point and batch, with evaluation.evaluate's arithmetic.

        On a fused conv net (see `fused_chain`) every point but the centre runs the fused plan, one point per forward.
        """
        if self.plan is not None and self.plan_note == "pending":
            self._check_plan(splits, batch_size)  # prepare() was not called
        if self.plan is not None:
            return self._evaluate_plan(points, splits, batch_size, 1)
        return self._evaluate_module(points, splits, batch_size)

    def _evaluate_module(self, points: Sequence[tuple[float, float]], splits: Splits, batch_size: int) -> list[Row]:
        rows = []
        for a, b in points:
            a, b = float(a), float(b)
            self._set(a, b)
            row = {}
            for split, (x, y) in splits.items():
                loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
                wrong = torch.zeros((), dtype=torch.int64, device=x.device)
                for xb, yb in self._batches(x, y, batch_size):
                    if self.reuse is not None:
                        self.reuse["injected"].z = self._z(xb, a, b)
                    logits = self.worker(xb)
                    loss_sum += F.cross_entropy(logits, yb, reduction="sum").double()
                    wrong += (logits.argmax(dim=1) != yb).sum()
                row[split] = (float(loss_sum) / len(x), float(wrong) / len(x))
            rows.append(row)
        return rows

    # ---- the fused plan (fused_chain) -------------------------------------------------------------
    def _plan_prepare(self, points: Sequence[tuple[float, float]]) -> list[fused_chain.Prepared]:
        """Return the plan's stacked, BatchNorm-folded weights for `points` (their parameters cast as `_set` casts them)."""
        assert self.plan is not None
        n = len(points)
        flat = torch.empty(n, self.c.numel(), dtype=torch.float64, device=self.c.device)
        for i, (a, b) in enumerate(points):
            if a == 0.0 and b == 0.0:
                flat[i].copy_(self.c)
            else:
                torch.add(self.c, self.d1, alpha=a, out=flat[i])
                flat[i].add_(self.d2, alpha=b)
        tensors, off = {}, 0
        for k, numel, shape, dtype in zip(self.names, self.numels, self.shapes, self.dtypes, strict=True):  # all four per name
            if k in self.plan_params:
                tensors[k] = flat[:, off : off + numel].to(dtype).view(n, *shape)
            off += numel
        if self.mode in ("interpolate", "reestimate") and self.plan_buffers:
            per_point = []
            for a, b in points:
                self._set(a, b)
                per_point.append([self.buffers[k].clone() for k in self.plan_buffers])
            buffers = {k: torch.stack([pp[i] for pp in per_point]) for i, k in enumerate(self.plan_buffers)}
        else:
            buffers = {k: self.buffers[k].unsqueeze(0).expand(n, *self.buffers[k].shape) for k in self.plan_buffers}
        return fused_chain.prepare(self.plan, tensors, buffers, n)

    def _rows_for(self, group: int) -> int:
        if group not in self.plan_rows:
            self.plan_rows[group] = fused_chain.rows_per_block(self._plan_act_row, group)
        return self.plan_rows[group]

    def _check_plan(self, splits: Splits, batch_size: int) -> None:
        """Compare the plan with the module forward on real inputs at two points; switch it off (noted) on any mismatch."""
        assert self.plan is not None
        x, y = next(iter(splits.values()))
        xb = self._batches(x, y, batch_size)[0][0][:16]
        pts = [(0.0, 0.0), (0.5, -0.25)]
        try:
            with torch.no_grad():
                prep = self._plan_prepare(pts)
                got = fused_chain.forward(self.plan, prep, xb, len(pts))
                self._plan_act_row = fused_chain.max_activation_per_row(self.plan, self._plan_prepare(pts[:1]), xb)
                for i, (a, b) in enumerate(pts):
                    self._set(a, b)
                    ref = self.worker(xb)
                    if got[i].shape != ref.shape or not torch.allclose(
                        got[i], ref, rtol=1e-4, atol=1e-4 * max(1.0, float(ref.abs().max()))
                    ):
                        raise ValueError(f"fused forward differs from the module's by {float((got[i] - ref).abs().max()):.3g}")
        except Exception as e:  # noqa: BLE001 - whatever the plan cannot do, the module forward still does
            self.plan = None
            self.plan_note = f"off ({e})".splitlines()[0][:200]
            return
        self.plan_note = "on"

    def _evaluate_plan(self, points: Sequence[tuple[float, float]], splits: Splits, batch_size: int, group: int) -> list[Row]:
        """Evaluate `points` with the fused plan, `group` points per forward; the centre with the module itself (bit-exact)."""
        assert self.plan is not None
        points = [(float(a), float(b)) for a, b in points]
        rows: list[Row | None] = [None] * len(points)
        centre = [i for i, (a, b) in enumerate(points) if a == 0.0 and b == 0.0]
        if centre:
            row = self._evaluate_module([(0.0, 0.0)], splits, batch_size)[0]
            for i in centre:
                rows[i] = dict(row)
        skip = set(centre)
        rest = [i for i in range(len(points)) if i not in skip]
        for start in range(0, len(rest), group):
            idx = rest[start : start + group]
            n = len(idx)
            prep = self._plan_prepare([points[i] for i in idx])
            block = self._rows_for(n)
            for split, (x, y) in splits.items():
                loss_sum = torch.zeros(n, dtype=torch.float64, device=x.device)
                wrong = torch.zeros(n, dtype=torch.int64, device=x.device)
                for xb, yb in self._batches(x, y, batch_size):
                    for xs, ys in zip(torch.split(xb, block), torch.split(yb, block), strict=True):  # inputs and labels
                        logits = fused_chain.forward(self.plan, prep, xs, n)  # (n, rows, classes)
                        if n == 1:
                            loss_sum += F.cross_entropy(logits[0], ys, reduction="sum").double()
                        else:
                            per = F.cross_entropy(logits.flatten(0, 1), ys.repeat(n), reduction="none").view(n, -1)
                            loss_sum += per.sum(dim=1).double()
                        wrong += (logits.argmax(dim=2) != ys).sum(dim=1)
                for j, i in enumerate(idx):
                    row_i = rows[i]
                    if row_i is None:
                        row_i = rows[i] = {}
                    row_i[split] = (float(loss_sum[j]) / len(x), float(wrong[j]) / len(x))
        # Every point has its row once there is a split (the centre above, the rest per split); with no split, None as before.
        return cast("list[Row]", rows)

    # ---- a chunk of points in one vmap pass ---------------------------------------------------------
    @torch.no_grad()
    def evaluate_stacked(self, points: Sequence[tuple[float, float]], splits: Splits, batch_size: int) -> list[Row]:
        """Return what `evaluate_loop` returns, evaluating all `points` in one vmap pass per batch (same rounding up to the GEMM kernels).

        On a fused conv net the points go through the fused plan instead, GROUP_POINTS per forward (grouped convolutions).
        """
        if self.plan is not None and self.plan_note == "pending":
            self._check_plan(splits, batch_size)  # prepare() was not called
        if self.plan is not None:
            return self._evaluate_plan(points, splits, batch_size, GROUP_POINTS)
        c = len(points)
        dev = self.c.device
        a = torch.tensor([float(p[0]) for p in points], dtype=torch.float64, device=dev)
        b = torch.tensor([float(p[1]) for p in points], dtype=torch.float64, device=dev)
        flat = self.c + a[:, None] * self.d1 + b[:, None] * self.d2  # (C, N)
        centre_rows = (a == 0) & (b == 0)
        if centre_rows.any():
            flat[centre_rows] = self.c
        stacked, off = {}, 0
        for k, n, shape, dtype in zip(self.names, self.numels, self.shapes, self.dtypes, strict=True):  # all four per name
            stacked[k] = flat[:, off : off + n].to(dtype).view(c, *shape)
            off += n
        if self.mode in ("interpolate", "reestimate"):
            per_point = []
            for ai, bi in zip(a.tolist(), b.tolist(), strict=True):  # one a and one b per point
                self._set(ai, bi)
                per_point.append({k: self.buffers[k].clone() for k in self.bn_keys})
            floating = [k for k in self.bn_keys if per_point[0][k].is_floating_point()]
            stacked.update({k: torch.stack([pp[k] for pp in per_point]) for k in floating})
            shared = {k: v for k, v in self.buffers.items() if k not in stacked}
        else:
            shared = dict(self.buffers)
        worker, reuse = self.worker, self.reuse
        if reuse is not None:  # the injected module stands where the first layer was: its parameters are not called
            prefix = f"{reuse['name']}."
            stacked = {k: v for k, v in stacked.items() if not k.startswith(prefix)}

        def forward(params: State, z: torch.Tensor | None, xb: torch.Tensor) -> torch.Tensor:
            if reuse is not None:
                reuse["injected"].z = z
            return cast(torch.Tensor, functional_call(worker, (params, shared), (xb,), strict=True))

        batched = torch.vmap(forward, in_dims=(0, 0 if reuse is not None else None, None))
        rows: list[Row] = [{} for _ in points]
        for split, (x, y) in splits.items():
            loss_sum = torch.zeros(c, dtype=torch.float64, device=x.device)
            wrong = torch.zeros(c, dtype=torch.int64, device=x.device)
            for xb, yb in self._batches(x, y, batch_size):
                z = None
                if reuse is not None:
                    z0, z1, z2 = reuse["cache"][id(xb)]
                    shape = (c,) + (1,) * z0.dim()
                    z = z0 + a.to(z0.dtype).view(shape) * z1 + b.to(z0.dtype).view(shape) * z2
                logits = batched(stacked, z, xb)  # (C, B, classes)
                per_example = F.cross_entropy(logits.flatten(0, 1), yb.repeat(c), reduction="none").view(c, -1)
                # Sum in the network's dtype per point, then accumulate in float64: the arithmetic of evaluate().
                loss_sum += per_example.sum(dim=1).double()
                wrong += (logits.argmax(dim=2) != yb).sum(dim=1)
            for i in range(c):
                rows[i][split] = (float(loss_sum[i]) / len(x), float(wrong[i]) / len(x))
        return rows
