"""Train several copies of one network in lockstep: parameters stacked along a leading copy dimension.

These small models are bound by per-step Python overhead (measured: docs/performance.md), so doing C
copies' forward, backward and update as one set of batched ops can beat C ordinary runs. Each copy
still sees exactly the batches `train` would give it (its own BatchStream), its own mean
cross-entropy, and an update that redoes torch.optim.SGD / Adam's single-tensor arithmetic op for
op on the stacked tensors (bit-identical given the same gradients).

Two forwards:
- folded (lmc_core's MLP and norm-free ConvNet, plain nn.Sequential stacks): the copies' batches
  are concatenated into one batch for the layers that are exact on any batch (ReLU, Flatten), and
  each Linear / Conv layer runs per copy with exactly the ops nn.Linear / nn.Conv and their autograd
  nodes use (_exact_layer). Results are bit-identical to `train_copies(strategy="loop")`.
- vmap(functional_call) over the stacked parameters for any other BatchNorm-free model: equal up to
  rounding only, since bmm and grouped convolutions round differently from per-copy GEMMs, and
  training is chaotic enough to grow ~1-ulp differences into different solutions over a full run.

Models with BatchNorm are refused: vmap cannot update running statistics per copy in train mode.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import TypeAlias, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lmc_core.data.augment import Augmenter
from lmc_core.data.dataset import Dataset
from lmc_core.foundations.config import TrainConfig
from lmc_core.foundations.events import Callback, Event, no_callback
from lmc_core.foundations.types import Masks
from lmc_core.models import MLP, ConvNet
from lmc_core.train.loop import BatchStream, TrainingDiverged, TrainResult, lr_at, steps_per_epoch, total_steps

# torch.optim.Adam's defaults, which make_optimizer keeps.
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
SGD_DAMPENING = 0.0

_Tensors: TypeAlias = list[torch.Tensor] | tuple[torch.Tensor, ...]  # what torch._foreach_* take and return


def stacking_obstacle(model: nn.Module) -> str | None:
    """Return why `model` cannot be trained stacked (a norm layer with running statistics), or None if it can."""
    for name, m in model.named_modules():
        running = isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats
        if isinstance(m, nn.modules.batchnorm._BatchNorm) or running:
            return (
                f"layer {name or type(m).__name__!r} ({type(m).__name__}) keeps running statistics, which vmap cannot "
                "update per copy in train mode; use strategy='loop'"
            )
    return None


class _StackedOptimizer:
    """torch.optim.SGD / Adam (as make_optimizer configures them) applied to stacked parameters.

    Every line mirrors torch.optim's single-tensor step (the path it takes on CPU), with the same op,
    operand order and Python-float scalars, so each element is updated by the same kernel arithmetic.
    The foreach variants are used only to cut Python overhead: on CPU they call those same per-tensor ops.
    """

    def __init__(self, params: list[torch.Tensor], cfg: TrainConfig):
        self.params = params
        self.cfg = cfg
        self.steps = 0
        self.bufs: list[torch.Tensor] | None = None  # SGD momentum; the first step copies the gradient, as torch does
        if cfg.optimizer == "adam":
            self.exp_avgs = [torch.zeros_like(p) for p in params]
            self.exp_avg_sqs = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor], lr: float) -> None:
        """Update the parameters in place with learning rate `lr`; returns nothing."""
        if self.cfg.optimizer == "adam":
            self._adam(list(grads), lr)
        else:
            self._sgd(list(grads), lr)

    def _sgd(self, grads: _Tensors, lr: float) -> None:
        cfg = self.cfg
        if cfg.weight_decay != 0:
            grads = torch._foreach_add(grads, self.params, alpha=cfg.weight_decay)
        if cfg.momentum != 0:
            if self.bufs is None:
                self.bufs = [g.detach().clone() for g in grads]
            else:
                torch._foreach_mul_(self.bufs, cfg.momentum)
                torch._foreach_add_(self.bufs, grads, alpha=1 - SGD_DAMPENING)
            grads = torch._foreach_add(grads, self.bufs, alpha=cfg.momentum) if cfg.nesterov else self.bufs
        torch._foreach_add_(self.params, grads, alpha=-lr)

    def _adam(self, grads: _Tensors, lr: float) -> None:
        beta1, beta2 = ADAM_BETAS
        self.steps += 1
        if self.cfg.weight_decay != 0:  # Adam's L2 form: the decay joins the gradient, before the moments
            grads = torch._foreach_add(grads, self.params, alpha=self.cfg.weight_decay)
        torch._foreach_lerp_(self.exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(self.exp_avg_sqs, beta2)
        torch._foreach_addcmul_(self.exp_avg_sqs, grads, grads, value=1 - beta2)
        step = float(self.steps)  # torch keeps the step as a float tensor and reads it back as a Python float
        step_size = lr / (1 - beta1**step)
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        denom = torch._foreach_sqrt(self.exp_avg_sqs)
        torch._foreach_div_(denom, bias_correction2_sqrt)
        torch._foreach_add_(denom, ADAM_EPS)
        torch._foreach_addcdiv_(self.params, self.exp_avgs, denom, value=-step_size)


# How each module of a known forward runs when the copies' batches are folded into one (C*B)-row batch.
# "fold": exact on any batch (max(x, 0), x * slope, views), so one call serves every copy.
# "per_copy": parameter-free but its kernels may round by position in the batch (vectorised
# transcendental functions, pooling sums), so it runs on each copy's rows separately.
# Linear and Conv layers run per copy through _exact_layer, so autograd also records the loop's backward.
_FOLD = (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Flatten)
_PER_COPY = (nn.Tanh, nn.Sigmoid, nn.GELU, nn.ELU, nn.SiLU, nn.Softplus, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)
_CONVS = (nn.Conv1d, nn.Conv2d)

Plan = list[tuple[str, str, nn.Module]]  # (how, module name, module)
StackedForward = Callable[[list[torch.Tensor], torch.Tensor], torch.Tensor]


def folded_plan(model: nn.Module) -> Plan | None:
    """Return how to run `model` folded, layer by layer, or None when its forward is not known to this module.

    Known forwards: lmc_core's MLP, its ConvNet without normalisation, and plain (nested) nn.Sequential
    stacks, built from Linear, Conv1d/Conv2d (zero padding given as numbers), Flatten(start_dim >= 1)
    and the parameter-free layers above, with every parameter trainable and none shared. Other
    models take the vmap path.
    """
    if type(model) is MLP:
        chain = [(f"layers.{n}", m) for n, m in model.layers.named_children()]
    elif type(model) is ConvNet:  # its forward: classifier(flatten(features(x)))
        chain = [(f"features.{n}", m) for n, m in model.features.named_children()]
        chain += [("flatten", model.flatten), ("classifier", model.classifier)]
    elif type(model) is nn.Sequential:
        chain = list(model.named_children())
    else:
        return None
    params = list(model.parameters())
    if len(list(model.named_parameters(remove_duplicate=False))) != len(params) or not all(p.requires_grad for p in params):
        return None
    plan: Plan = []
    return plan if _walk(chain, plan) and plan else None


def _walk(children: list[tuple[str, nn.Module]], plan: Plan) -> bool:
    """Append the (full name, module) pairs to `plan` in call order; return False at the first one that cannot run folded."""
    for full, child in children:
        kind = type(child)
        if kind is nn.Sequential:
            if not _walk([(f"{full}.{n}", m) for n, m in child.named_children()], plan):
                return False
        elif kind is nn.Linear:
            plan.append(("linear", full, child))
        elif kind in _CONVS and child.padding_mode == "zeros" and not isinstance(child.padding, str):
            plan.append(("conv", full, child))
        elif kind in _FOLD and (not isinstance(child, nn.Flatten) or child.start_dim >= 1):  # kind is exactly one of _FOLD
            plan.append(("fold", full, child))
        elif kind in _PER_COPY:
            plan.append(("per_copy", full, child))
        else:
            return False
    return True


def make_stacked_forward(template: nn.Module, names: list[str]) -> StackedForward:
    """Return f(stacked params in `names` order, inputs (C, B, ...)) -> logits (C, B, K): folded if possible, else vmap."""
    plan = folded_plan(template)
    if plan is not None:
        return _folded_forward(plan, names)
    # The general path: any BatchNorm-free module, one functional_call per copy under vmap. Not
    # bit-identical to the loop (bmm and grouped convolutions round differently) and slower for MLPs.
    logits_of = torch.vmap(lambda p, x: functional_call(template, p, (x,)))
    return lambda params, x: logits_of(dict(zip(names, params, strict=True)), x)  # one stacked tensor per name


def _folded_forward(plan: Plan, names: list[str]) -> StackedForward:
    """Return the folded forward of `plan` (see folded_plan)."""
    index = {n: i for i, n in enumerate(names)}
    steps = [
        (how, module, _conv_args(module) if how == "conv" else None, index.get(f"{name}.weight"), index.get(f"{name}.bias"))
        for how, name, module in plan
    ]

    def forward(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        copies, batch = x.shape[:2]
        h = x.flatten(0, 1)  # (C*B, ...): copy c's examples are rows c*B .. (c+1)*B - 1
        for how, module, conv, w_at, b_at in steps:
            if how == "fold":
                h = module(h)
            elif how == "per_copy":
                h = torch.cat([module(part) for part in h.chunk(copies)])
            else:
                if how == "linear" and h.dim() != 2:
                    raise ValueError(
                        f"stacked training runs {module} on (batch, features) inputs only, got shape "
                        f"{tuple(h.shape[1:])} per example; flatten before it, or use strategy='loop'"
                    )
                bias = None if b_at is None else params[b_at]
                assert w_at is not None  # folded_plan admits only models whose parameters all train
                h = _exact_layer(conv, h.view(copies, batch, *h.shape[1:]), params[w_at], bias).flatten(0, 1)
        return h.view(copies, batch, *h.shape[1:])

    return forward


ConvArgs = tuple[list[int], list[int], list[int], bool, list[int], int]


def _exact_layer(conv: ConvArgs | None, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Return the stacked outputs of a Linear (conv=None) or Conv layer run per copy with the loop's own op.

    Batched GEMMs round differently from the loop's: MKL splits a small-output GEMM's sum over the
    threads in a plain mm but runs each matrix of a bmm on one thread, and autograd takes bmm's weight
    gradient as x^T g where nn.Linear's is g^T x (measured: the classifier's weight gradient differs by
    ~1 ulp, and training grows that into a different solution over a full run). So each copy runs the
    op nn.Linear / nn.Conv would run (addmm on the transposed weight view, aten.convolution) on views
    with the loop's shapes and strides, and autograd records the loop's backward nodes for it. unbind
    keeps the backward cheap: its gradient is one stack, not C zero-padded copies. The speed-up comes
    from batching everything else, the optimizer above all (choose_copies_strategy).
    """
    xs, ws = x.unbind(0), weight.unbind(0)
    bs: Sequence[torch.Tensor | None] = [None] * len(xs) if bias is None else bias.unbind(0)
    # All three hold one entry per copy (unbind of the stacked tensors).
    if conv is not None:  # F.conv1d / F.conv2d on a batch is exactly aten.convolution
        return torch.stack([torch.ops.aten.convolution(xc, wc, bc, *conv) for xc, wc, bc in zip(xs, ws, bs, strict=True)])
    if bias is not None:  # F.linear on a matrix: addmm with the bias, on the transposed weight view
        return torch.stack([torch.addmm(cast(torch.Tensor, bc), xc, wc.t()) for xc, wc, bc in zip(xs, ws, bs, strict=True)])
    return torch.stack([xc.mm(wc.t()) for xc, wc in zip(xs, ws, strict=True)])


def _conv_args(module: nn.Module) -> ConvArgs:
    """Return aten.convolution's arguments after (input, weight, bias) for an nn.Conv1d/Conv2d, as F.conv*d passes them."""
    assert isinstance(module, _CONVS) and not isinstance(module.padding, str)  # what _walk plans as "conv"
    dims = len(module.kernel_size)
    return list(module.stride), list(module.padding), list(module.dilation), False, [0] * dims, module.groups


def _stack(t: torch.Tensor, copies: int) -> torch.Tensor:
    """Return `copies` contiguous copies of `t` along a new leading dimension."""
    return t.detach().unsqueeze(0).expand(copies, *t.shape).contiguous()


def _stacked_masks(names: list[str], params: list[torch.Tensor], masks: Masks | None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Return (stacked parameters that have a mask, their masks as 0/1 tensors of the same stacked shape)."""
    if not masks:
        return [], []
    index = {n: i for i, n in enumerate(names)}
    unknown = [n for n in masks if n not in index]
    if unknown:
        raise KeyError(f"masks name weights the model does not train: {unknown}")
    targets = [params[index[n]] for n in masks]
    # Multiplying by an exact 0.0 / 1.0, as apply_masks does, so pruned entries are the same (signed) zeros.
    factors = [m.to(p.device, p.dtype).expand_as(p).contiguous() for m, p in zip(masks.values(), targets, strict=True)]  # both per mask
    return targets, factors


@torch.no_grad()
def _zero_pruned(targets: list[torch.Tensor], factors: list[torch.Tensor]) -> None:
    """Zero the pruned entries of the stacked weights in place (apply_masks for every copy at once)."""
    if targets:
        torch._foreach_mul_(targets, factors)


def _copy_states(model: nn.Module, names: list[str], params: list[torch.Tensor], copies: int) -> list[dict[str, torch.Tensor]]:
    """Return one CPU state_dict per copy, keyed and ordered like `model.state_dict()`."""
    stacked = {id(p): s for p, s in zip((dict(model.named_parameters())[n] for n in names), params, strict=True)}  # both per name
    # Tied parameters appear under several names in state_dict; map every name to its one stacked tensor.
    by_name = {n: stacked.get(id(p)) for n, p in model.named_parameters(remove_duplicate=False)}
    states = []
    for c in range(copies):
        state = {}
        for key, value in model.state_dict().items():
            source = by_name.get(key)
            state[key] = (value if source is None else source[c]).detach().to("cpu", copy=True)
        states.append(state)
    return states


def train_stacked(
    model: nn.Module,
    data: Dataset,
    cfg: TrainConfig,
    augmenter: Augmenter,
    *,
    seeds: list[tuple[int, int]],
    masks: Masks | None = None,
    start_step: int = 0,
    end_step: int | None = None,
    stage: str = "train",
    callback: Callback = no_callback,
) -> list[TrainResult]:
    """Train one copy of `model`'s current state per (data_seed, augment_seed), all in lockstep; return their results in order.

    Same contract as `train_copies(strategy="loop")`: `model` is not modified, copy i reports events
    and divergence as stage f"{stage}[i]" (events come interleaved, once per epoch per copy), and each
    copy's `seconds` is its share (1/C) of the joint wall time. Raises ValueError for BatchNorm models.
    """
    obstacle = stacking_obstacle(model)
    if obstacle is not None:
        raise ValueError(f"{stage}: cannot train copies stacked: {obstacle}")
    if not seeds:
        raise ValueError(f"{stage}: give at least one (data_seed, augment_seed) pair")
    copies = len(seeds)
    spe = steps_per_epoch(cfg, len(data.x_train))
    total = total_steps(cfg, len(data.x_train))
    end = total if end_step is None else end_step
    if not 0 <= start_step <= end <= total:
        raise ValueError(f"{stage}: steps must satisfy 0 <= start ({start_step}) <= end ({end}) <= schedule length ({total})")

    # A private module to run functional_call on: the caller's model keeps its mode and parameters.
    template = copy.deepcopy(model).train()
    names = [n for n, p in template.named_parameters() if p.requires_grad]
    own = dict(template.named_parameters())
    params = [_stack(own[n], copies).requires_grad_() for n in names]
    masked, factors = _stacked_masks(names, params, masks)
    _zero_pruned(masked, factors)
    optimizer = _StackedOptimizer(params, cfg)
    streams = [BatchStream(data, cfg.batch_size, ds, aug, augmenter, cfg.cutmix, cfg.drop_last) for ds, aug in seeds]
    logits_of = make_stacked_forward(template, names)
    labels = [f"{stage}[{c}]" for c in range(copies)]
    history: list[list[dict[str, float]]] = [[] for _ in range(copies)]
    window: list[torch.Tensor] = []  # per-step (C,) losses, checked once per epoch to avoid a device sync per step
    t0 = time.perf_counter()
    for label in labels:
        callback(Event(label, 0, end - start_step))
    for step in range(start_step, end):
        lr = lr_at(cfg, step, total, spe)
        batches = [next(s) for s in streams]
        xb = torch.stack([b[0] for b in batches])
        batch_labels = [b[1] for b in batches]
        logits = logits_of(params, xb)
        # The loss as one ordinary call per copy: a vmapped cross_entropy sums the batch in another order
        # (loss values differ in the last bit), while per-copy calls give train's losses bit for bit.
        losses = torch.stack([F.cross_entropy(out, y) for out, y in zip(logits.unbind(0), batch_labels, strict=True)])  # both per copy
        # d(sum of the copies' losses)/d(copy c's weights) is exactly copy c's own gradient: no cross terms.
        grads = torch.autograd.grad(losses.sum(), params)
        optimizer.step(grads, lr)
        _zero_pruned(masked, factors)
        window.append(losses.detach())
        if len(window) == spe or step + 1 == end:
            rows = _check_window(torch.stack(window), labels, step)
            for c, mean in enumerate(rows):
                history[c].append({"step": step + 1, "lr": lr, "train_loss": mean})
            window = []
            for c, label in enumerate(labels):
                callback(Event(label, step + 1 - start_step, end - start_step, {"train_loss": rows[c], "lr": lr}))
    seconds = (time.perf_counter() - t0) / copies
    states = _copy_states(template, names, params, copies)
    return [
        TrainResult(
            state=states[c],
            start_step=start_step,
            end_step=end,
            examples=streams[c].examples,
            seconds=seconds,
            history=history[c],
        )
        for c in range(copies)
    ]


def _check_window(losses: torch.Tensor, labels: list[str], step: int) -> list[float]:
    """Return each copy's mean loss over the window (steps x copies); raise TrainingDiverged for the first copy with a non-finite loss."""
    means = []
    for c, label in enumerate(labels):
        # A contiguous 1-D column reduces exactly like train's torch.stack(window).mean().
        column = losses[:, c].contiguous()
        finite = torch.isfinite(column)
        if not bool(finite.all()):
            first = int((~finite).nonzero()[0])
            raise TrainingDiverged(label, step + 1 - len(column) + first, float(column[first]))
        means.append(float(column.mean()))
    return means


def choose_copies_strategy(model: nn.Module, copies: int) -> str:
    """Return "stacked" for 2+ copies of a model on the folded path without Conv2d (MLPs, Conv1d nets), else "loop".

    The folded path is bit-identical to the loop, so this is purely a speed choice, measured by
    benchmarks/bench_batched_copies.py on the project's shared 2-core CPU (torch 2.13, batch 32,
    SGD momentum, 2 epochs; loop time / stacked time, medians of 5 interleaved repeats, ranges over
    three runs of the benchmark, which are noisy):
    MNIST-1D MLP 40-100-100-10: 2 copies 1.13-1.33x (1 or 2 threads), with 50% masks 1.13-1.37x,
    4 copies 1.1-2.1x; MNIST-1D ConvNet 3 x Conv1d 64 k5 s2: 1.04-1.28x;
    digits ConvNet 3 x Conv2d 32 k3: 0.93-1.18x, not clearly faster, so the loop.
    The gain is per-step overhead (one foreach optimizer step, one backward pass, one ReLU and mask
    multiply for all copies); the GEMMs and convolutions are still one per copy, which is why it
    shrinks as convolutions grow. vmap(functional_call) is never chosen: 0.82-1.17x for the MLP,
    and only equal up to rounding.
    """
    if copies < 2 or stacking_obstacle(model) is not None or folded_plan(model) is None:
        return "loop"
    return "loop" if any(type(m) is nn.Conv2d for m in model.modules()) else "stacked"
