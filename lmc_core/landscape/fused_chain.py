"""A fused, multi-point forward for chain-shaped float32 conv nets, used by `landscape.evaluator.PlaneEvaluator`.

A surface evaluates the same network at hundreds of parameter points on a fixed batch. For the
small conv nets of the paper (conv -> BatchNorm -> ReLU -> pool blocks, then Flatten -> Linear) the
module forward spends most of its time in memory passes over large activations, not in arithmetic:
profiled on the team's 2-core CPU (ConvNetBN-D3W16, batch 128, NHWC) BatchNorm, ReLU and pooling
took as long as the three convolutions. `FusedChain` runs the same network as a plan:

* eval-mode BatchNorm is folded into the preceding Conv/Linear per point (W' = W s, b' = (b - mu) s + beta,
  s = gamma / sqrt(var + eps), computed in float64 from the point's float32 parameters), which removes
  its pass; only statistics-based (running) BatchNorm is folded, the batch-statistics mode is never
  routed here (BatchNorm without running statistics makes the plan refuse the model);
* ReLU after a conv runs inside the oneDNN convolution (`mkldnn::_convolution_pointwise`, the op
  torch.compile's CPU backend emits), which removes another pass;
* P points share one forward: the first convolution sees the shared input with the P points' filters
  stacked (one convolution with P x C_out channels), later convolutions are grouped (groups = P x groups),
  the classifier is a batched matmul; activations stay channels_last;
* the batch is cut into row blocks so a block's activations stay in the core's cache.

The result equals the module forward up to float32 rounding (summation order); `PlaneEvaluator`
checks the plan against the module on real inputs before using it, and evaluates the plane's centre
with the module itself, so the centre stays bit-identical to `evaluation.evaluate`.

Supported: a forward that `torch.fx` traces to a chain of leaf modules (each consuming the previous
output): Conv2d (zeros padding, integer padding), BatchNorm1d/2d with running statistics directly after
a Conv/Linear, ReLU, AvgPool2d, MaxPool2d, Flatten(1, -1), Linear, Identity/Dropout (eval), with at
least one Conv2d. Anything else: `build` returns None and the caller keeps the module forward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import torch
import torch.nn.functional as F
from torch import nn

ROW_BLOCK_BYTES = 4 * 2**20  # target size of a row block's largest activation (all P points); measured best at 4-8 MiB
MIN_ROWS = 8

_CONV_RELU: Callable[..., torch.Tensor] | None
try:
    _CONV_RELU = (
        torch.ops.mkldnn._convolution_pointwise.default
        if torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        else None
    )
except (AttributeError, RuntimeError):  # a build without oneDNN
    _CONV_RELU = None


@dataclass
class Step:
    kind: str  # conv | linear | relu | pool | flatten
    name: str = ""
    module: nn.Module | None = None
    bn: str | None = None  # the folded BatchNorm's module name
    bn_module: nn.BatchNorm1d | nn.BatchNorm2d | None = None
    relu: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


Prepared: TypeAlias = tuple[torch.Tensor, torch.Tensor | None] | None
"""One step's stacked, BN-folded (weight, bias) for all points; None for a step without parameters."""


def _chain_modules(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """Return the forward as a list of (name, leaf module) when it is a plain chain, else None."""
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception:  # noqa: BLE001 - any untraceable forward just keeps the module path
        return None
    nodes = list(gm.graph.nodes)
    if len(nodes) < 3 or nodes[0].op != "placeholder" or nodes[-1].op != "output":
        return None
    if any(n.op == "placeholder" for n in nodes[1:]):
        return None
    prev = nodes[0]
    out: list[tuple[str, nn.Module]] = []
    for n in nodes[1:-1]:
        if n.op == "call_module" and n.args == (prev,) and not n.kwargs:
            out.append((n.target, model.get_submodule(n.target)))
        elif n.op == "call_function" and n.target is torch.flatten and n.args[:1] == (prev,):
            start = n.args[1] if len(n.args) > 1 else n.kwargs.get("start_dim", 0)
            end = n.args[2] if len(n.args) > 2 else n.kwargs.get("end_dim", -1)
            out.append(("", nn.Flatten(start, end)))
        else:
            return None
        prev = n
    if nodes[-1].args != (prev,):
        return None
    return out


def build(model: nn.Module) -> list[Step] | None:
    """Return the plan's steps for `model` (see the module docstring for what is supported), or None."""
    if _CONV_RELU is None:
        return None
    mods = _chain_modules(model)
    if not mods:
        return None
    params = list(model.parameters())
    if not params or any(p.dtype != torch.float32 for p in params):
        return None
    steps: list[Step] = []
    flattened = False
    for name, m in mods:
        last = steps[-1] if steps else None
        if isinstance(m, nn.Conv2d):
            if flattened or m.padding_mode != "zeros" or isinstance(m.padding, str):
                return None
            steps.append(Step("conv", name, m))
        elif isinstance(m, nn.Linear):
            if not flattened:
                return None
            steps.append(Step("linear", name, m))
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if (
                last is None
                or last.kind not in ("conv", "linear")
                or last.bn is not None
                or last.relu
                or not m.track_running_stats
                or m.running_mean is None
            ):
                return None
            last.bn, last.bn_module = name, m
        elif isinstance(m, nn.ReLU):
            if last is not None and last.kind in ("conv", "linear") and not last.relu:
                last.relu = True
            else:
                steps.append(Step("relu", name, m))
        elif isinstance(m, (nn.AvgPool2d, nn.MaxPool2d)):
            if flattened or (isinstance(m, nn.MaxPool2d) and m.return_indices):
                return None
            steps.append(Step("pool", name, m))
        elif isinstance(m, nn.Flatten):
            if flattened or m.start_dim != 1 or m.end_dim != -1:
                return None
            flattened = True
            steps.append(Step("flatten", name, m))
        elif isinstance(m, (nn.Identity, nn.Dropout)):
            continue  # the worker is in eval mode: dropout is the identity
        else:
            return None
    if not any(s.kind == "conv" for s in steps) or steps[-1].kind != "linear":
        return None
    if next(s for s in steps if s.kind in ("conv", "linear")).kind != "conv":
        return None
    return steps


def param_names(steps: list[Step]) -> set[str]:
    names = set()
    for s in steps:
        if s.kind in ("conv", "linear"):
            assert isinstance(s.module, (nn.Conv2d, nn.Linear))
            names.add(f"{s.name}.weight")
            if s.module.bias is not None:
                names.add(f"{s.name}.bias")
            if s.bn_module is not None and s.bn_module.affine:
                names.update({f"{s.bn}.weight", f"{s.bn}.bias"})
    return names


def bn_buffer_names(steps: list[Step]) -> list[str]:
    return [f"{s.bn}.{b}" for s in steps if s.bn for b in ("running_mean", "running_var")]


def prepare(steps: list[Step], tensors: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor], points: int) -> list[Prepared]:
    """Return per step the stacked, BN-folded weights of `points` points.

    `tensors[name]` is (P, *shape) float32 (the points' parameters), `buffers[name]` (P, C) (their BatchNorm statistics).
    """
    out: list[Prepared] = []
    for s in steps:
        if s.kind not in ("conv", "linear"):
            out.append(None)
            continue
        w = tensors[f"{s.name}.weight"]
        co = w.shape[1]
        b = tensors.get(f"{s.name}.bias")
        if s.bn_module is not None:
            bn = s.bn_module
            mean = buffers[f"{s.bn}.running_mean"].double()
            var = buffers[f"{s.bn}.running_var"].double()
            scale = torch.rsqrt(var + bn.eps)
            if bn.affine:
                scale = scale * tensors[f"{s.bn}.weight"].double()
            shift = -mean * scale
            if b is not None:
                shift = shift + b.double() * scale
            if bn.affine:
                shift = shift + tensors[f"{s.bn}.bias"].double()
            w = (w.double() * scale.view(points, co, *([1] * (w.dim() - 2)))).to(w.dtype)
            b = shift.to(w.dtype)
        if s.kind == "conv":
            out.append((w.reshape(points * co, *w.shape[2:]).contiguous(), None if b is None else b.reshape(-1).contiguous()))
        else:
            out.append((w, b))
    return out


def _apply(s: Step, pr: Prepared, h: torch.Tensor, state: str, points: int) -> tuple[torch.Tensor, str]:
    if s.kind == "conv":
        m = s.module
        assert isinstance(m, nn.Conv2d) and pr is not None
        w, b = pr
        if state == "shared":
            if points > 1 and m.groups != 1:
                raise ValueError("a grouped first convolution cannot share its input across points")
            groups = m.groups
        else:
            groups = m.groups * points
        if s.relu:
            assert _CONV_RELU is not None  # build() returns no plan without it
            h = _CONV_RELU(h, w, b, list(m.padding), list(m.stride), list(m.dilation), groups, "relu", [], "")
        else:
            h = F.conv2d(h, w, b, m.stride, m.padding, m.dilation, groups)
        return h, "chan"
    if s.kind == "pool":
        assert s.module is not None
        return s.module(h), state
    if s.kind == "relu":
        return torch.relu(h), state
    if s.kind == "flatten":
        if state != "chan":
            raise ValueError("flatten before any convolution")
        return h.reshape(h.shape[0], points, -1).transpose(0, 1), "pts"
    # linear, after the flatten: h is (P, B, F)
    assert pr is not None
    w, b = pr
    if points == 1:
        h = F.linear(h[0], w[0], None if b is None else b[0]).unsqueeze(0)
    elif b is None:
        h = torch.bmm(h, w.transpose(1, 2))
    else:
        h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
    if s.relu:
        h = h.relu_()
    return h, state


def forward(steps: list[Step], prepared: list[Prepared], x: torch.Tensor, points: int) -> torch.Tensor:
    """Return the logits (P, B, classes) of `points` points on the shared input `x` (B, ...)."""
    h, state = x, "shared"  # shared: no point axis yet; chan: (B, P*C, H, W); pts: (P, B, F)
    for s, pr in zip(steps, prepared, strict=True):  # prepare() gives one entry per step
        h, state = _apply(s, pr, h, state, points)
    return h


def max_activation_per_row(steps: list[Step], prepared: list[Prepared], x: torch.Tensor) -> int:
    """Return the largest activation's element count per input row before the flatten, for one point (a forward on 1 row)."""
    biggest, h, state = 1, x[:1], "shared"
    for s, pr in zip(steps, prepared, strict=True):  # prepare() gives one entry per step
        if s.kind == "flatten":
            break
        h, state = _apply(s, pr, h, state, 1)
        biggest = max(biggest, h.numel())
    return biggest


def rows_per_block(max_act_row: int, points: int, element_size: int = 4) -> int:
    return max(MIN_ROWS, ROW_BLOCK_BYTES // max(1, points * max_act_row * element_size))
