"""The generalised Gauss-Newton (GGN) diagonal of the mean cross-entropy, and where it is the Hessian's diagonal.

For a loss L(w) = (1/N) sum_n l(f_n(w)) on logits f_n, the Hessian splits as (Schraudolph 2002)

    H = (1/N) sum_n J_n^T H_l J_n  +  (1/N) sum_n sum_k (dl/df_nk) d^2 f_nk / dw dw^T,

the Gauss-Newton term G and a residual. The residual's diagonal entry i holds d^2 f / dw_i^2, which is zero wherever
the network's output is linear in the single weight w_i (the others held fixed). That is the case, almost
everywhere, for a weight of a linear or convolution layer, or of an affine map (eval-mode BatchNorm, a norm layer's
own scale and shift), when everything after it is piecewise linear in its input: ReLU, max- and average-pooling,
flatten, further linear, convolution and eval-mode BatchNorm layers, residual additions. Then H_ii = G_ii exactly,
at every point off the ReLU and pooling kinks, the measure-zero set where products and Gauss-Newton alike differentiate
a one-sided branch. A smooth nonlinearity after the weight (tanh, GELU), a normalisation by statistics of the
activations (instance, group or layer norm; BatchNorm with batch statistics), or a weight used twice breaks it.
`gauss_newton_exact` decides it per parameter from the traced module graph (torch.fx), never from the
architecture's name, and says why where it does not hold.

G_ii itself costs C backward passes (C classes), not one product per weight: for softmax p the output Hessian of
the cross-entropy factorises as diag(p) - p p^T = S S^T with columns s_c = sqrt(p_c) (e_c - p), so
G_ii = (1/N) sum_n sum_c ((J_n^T s_nc)_i)^2, the squared per-example gradients of s_nc . f_n summed (the exact
GGN diagonal of Dangel, Kunstner & Hennig 2020, "BackPACK", computed here with torch.func's per-example gradients).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from lmc_core.hessian.operator import _EvalBatchNorm

# Modules whose output is piecewise linear (a.e. linear) in their input. BatchNorm counts only with running statistics
# (checked apart); Dropout only when it is off.
_PIECEWISE_LINEAR_MODULES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    _EvalBatchNorm,
    nn.ReLU,
    nn.LeakyReLU,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.Flatten,
    nn.Identity,
)

# Modules whose output is affine in each of their own parameters, the input held fixed.
_AFFINE_IN_OWN_PARAMETERS: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    _EvalBatchNorm,
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
)

_PIECEWISE_LINEAR_FUNCTIONS: frozenset[Any] = frozenset(
    {
        operator.add,
        operator.sub,
        operator.neg,
        operator.pos,
        operator.getitem,
        torch.add,
        torch.sub,
        torch.neg,
        torch.flatten,
        torch.reshape,
        torch.cat,
        torch.stack,
        torch.relu,
        F.relu,
        F.max_pool1d,
        F.max_pool2d,
        F.avg_pool1d,
        F.avg_pool2d,
        F.adaptive_avg_pool1d,
        F.adaptive_avg_pool2d,
    }
)
_LINEAR_METHODS = frozenset(
    {"view", "reshape", "flatten", "relu", "contiguous", "squeeze", "unsqueeze", "permute", "transpose", "size", "dim", "add", "sub"}
)
_PRODUCTS = frozenset({operator.mul, torch.mul})
_QUOTIENTS = frozenset({operator.truediv, torch.div})


class _Tracer(fx.Tracer):
    """torch.fx's tracer, with the operator's eval-mode BatchNorm kept whole (its forward branches on the input's rank)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, _EvalBatchNorm) or super().is_leaf_module(m, module_qualified_name)


def _uses_batch_statistics(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm) and (m.training or not m.track_running_stats or m.running_mean is None)


def _couples_or_randomises(model: nn.Module) -> str | None:
    """Why the per-example route cannot run at all (examples coupled, or a random forward), or None."""
    for name, m in model.named_modules():
        if _uses_batch_statistics(m):
            return (
                f"{name} ({type(m).__name__}) normalises with the batch's own statistics (mode='train'), which couples the examples "
                "and is not linear in the weights before it"
            )
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0:
            return f"{name} ({type(m).__name__}) is active: the forward is random"
    return None


def _describe(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return f"{node.target} ({type(modules[str(node.target)]).__name__})"
    if node.op == "call_function":
        return f"{getattr(node.target, '__name__', node.target)}()"
    return f"{node.op} {node.target}"


def _piecewise_linear_in(node: fx.Node, dependent: Callable[[Any], bool], modules: dict[str, nn.Module]) -> bool:
    """True when `node`'s output is piecewise linear in every input that `dependent` flags, the other inputs held fixed."""
    if node.op == "output":
        return True
    if node.op == "call_module":
        m = modules[str(node.target)]
        if isinstance(m, nn.modules.dropout._DropoutNd):
            return not m.training or m.p == 0
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return not _uses_batch_statistics(m)  # with running statistics: a per-channel affine map
        return isinstance(m, _PIECEWISE_LINEAR_MODULES)
    if node.op == "call_function":
        if node.target in _PIECEWISE_LINEAR_FUNCTIONS:
            return True
        if node.target in _PRODUCTS:  # linear in one factor while the other does not move with the weight
            return sum(dependent(a) for a in node.args) <= 1 and not any(dependent(v) for v in node.kwargs.values())
        if node.target in _QUOTIENTS:
            return not any(dependent(a) for a in node.args[1:]) and not any(dependent(v) for v in node.kwargs.values())
        return False
    if node.op == "call_method":
        return str(node.target) in _LINEAR_METHODS
    return False


def gauss_newton_exact(model: nn.Module) -> dict[str, str | None]:
    """Return, for each parameter of `model`, None where H_ii = G_ii (the output is piecewise linear in each of its
    single weights), else why not.

    Decided from the module graph torch.fx traces (in the model's current mode), conservatively: an op or module it
    does not know, a parameter used outside a known layer or used twice, or a model it cannot trace, all say no.
    An unused parameter says yes (both diagonals are 0 there).
    """
    names = [n for n, _ in model.named_parameters()]
    why = _couples_or_randomises(model)
    if why is not None:
        return dict.fromkeys(names, why)
    try:
        graph = _Tracer().trace(model)
    except Exception as e:  # noqa: BLE001 -- symbolic tracing fails in many ways (data-dependent control flow, proxies); each means "no"
        return dict.fromkeys(names, f"the model cannot be traced by torch.fx ({type(e).__name__}: {e}), so its graph is unknown")
    modules = dict(model.named_modules())
    outputs = [n for n in graph.nodes if n.op == "output"]
    if len(outputs) != 1 or not isinstance(outputs[0].args[0], fx.Node):
        return dict.fromkeys(names, "the model's output is not a single tensor of logits")

    # Where each parameter enters the graph: the call of a module that owns it, or a bare attribute read. By identity,
    # so that a parameter tied between two modules (listed once by named_parameters) is seen entering twice.
    name_of = {id(p): n for n, p in model.named_parameters()}
    enters: dict[str, list[fx.Node]] = {n: [] for n in names}
    for node in graph.nodes:
        if node.op == "call_module":
            for _, p in modules[str(node.target)].named_parameters(recurse=False):
                enters[name_of[id(p)]].append(node)
        elif node.op == "get_attr":
            owner, _, attr = str(node.target).rpartition(".")
            value = getattr(model.get_submodule(owner), attr, None)
            if isinstance(value, nn.Parameter) and id(value) in name_of:
                enters[name_of[id(value)]].append(node)

    out: dict[str, str | None] = {}
    for name in names:
        nodes = enters[name]
        if not nodes:
            out[name] = None
            continue
        if len(nodes) > 1:
            out[name] = f"{name} enters the forward {len(nodes)} times (a shared module is not linear in its weights)"
            continue
        first = nodes[0]
        if first.op != "call_module" or not isinstance(modules[str(first.target)], _AFFINE_IN_OWN_PARAMETERS):
            out[name] = f"{name} is used by {_describe(first, modules)}, not by a layer known to be affine in its own parameters"
            continue
        out[name] = _downstream_obstacle(graph, first, modules)
    return out


def _downstream_obstacle(graph: fx.Graph, start: fx.Node, modules: dict[str, nn.Module]) -> str | None:
    """Return why the output is not piecewise linear in `start`'s output, or None when it is."""
    moved: set[fx.Node] = {start}

    def dependent(arg: Any) -> bool:
        found = False

        def visit(a: fx.Node) -> fx.Node:
            nonlocal found
            found = found or a in moved
            return a

        fx.node.map_arg(arg, visit)
        return found

    for node in graph.nodes:  # topological order
        if node is start or not (dependent(node.args) or dependent(node.kwargs)):
            continue
        if not _piecewise_linear_in(node, dependent, modules):
            return f"{_describe(node, modules)} after {start.target} is not piecewise linear in its input"
        moved.add(node)
    return None


def ggn_diagonal(
    model: nn.Module,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    names: Sequence[str],
    *,
    chunk_bytes: int = 1 << 27,
) -> torch.Tensor:
    """Return the exact GGN diagonal of the mean cross-entropy over the union of `batches`, for the parameters `names`.

    Flat, in `names`' order; every example weighs 1 / N, as the mean over all examples. The model is read as it
    is (mode, dtype, device; not modified). Per-example gradients are taken `chunk_bytes` of them at a time.
    It needs examples that do not interact in the forward (no batch statistics): see `gauss_newton_exact`.
    """
    params = dict(model.named_parameters())
    unknown = [n for n in names if n not in params]
    if unknown:
        raise KeyError(f"unknown parameter names {unknown[:5]}; expected names from model.named_parameters()")
    chosen = {n: params[n].detach() for n in names}
    fixed = {**{n: p.detach() for n, p in params.items() if n not in chosen}, **dict(model.named_buffers())}
    if not chosen:
        raise ValueError("no parameters selected")
    total = sum(int(y.shape[0]) for _, y in batches)
    if total == 0:
        raise ValueError("the GGN diagonal needs at least one example")
    some = next(iter(chosen.values()))
    size = sum(p.numel() for p in chosen.values())
    chunk = max(1, chunk_bytes // (size * some.element_size()))

    def projected(weights: dict[str, torch.Tensor], x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, {**fixed, **weights}, (x.unsqueeze(0),))
        return torch.dot(logits.reshape(-1), s)

    per_example = vmap(grad(projected), in_dims=(None, 0, 0))
    acc = {n: torch.zeros_like(p) for n, p in chosen.items()}
    for x, _ in batches:  # the labels do not enter: the cross-entropy's output Hessian depends on p only
        with torch.no_grad():
            p = functional_call(model, {**fixed, **chosen}, (x,)).softmax(dim=1)
        root = p.sqrt()
        for c in range(p.shape[1]):
            s = -p * root[:, c : c + 1]  # s_c = sqrt(p_c) (e_c - p), one row per example
            s[:, c] += root[:, c]
            for a in range(0, x.shape[0], chunk):
                g = per_example(chosen, x[a : a + chunk], s[a : a + chunk])
                for n in acc:
                    acc[n] += g[n].square().sum(0)
    return torch.cat([acc[n].reshape(-1) for n in names]) / total
