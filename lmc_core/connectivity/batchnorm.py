"""BatchNorm along a path or a plane: re-estimated running statistics, interpolated ones, or an endpoint's."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call

from lmc_core.foundations.types import State

BN_MODES = ("auto", "reestimate", "interpolate", "endpoint")
# --------------------------------------------------------------------------- BatchNorm


def has_batchnorm(model: nn.Module) -> bool:
    """Return True when the model contains any BatchNorm layer."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _bn_modules(model: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    """Return the BatchNorm layers that keep running statistics, by module name."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def bn_buffer_keys(model: nn.Module) -> list[str]:
    def prefix(name: str) -> str:
        return f"{name}." if name else ""

    return [f"{prefix(n)}{buf}" for n, _ in _bn_modules(model) for buf in ("running_mean", "running_var", "num_batches_tracked")]


def calibration_batches(calibration: torch.Tensor, bn_batches: int, bn_batch_size: int) -> list[torch.Tensor]:
    """Return the first `bn_batches` consecutive batches of `bn_batch_size` inputs (fixed order, so re-estimation is deterministic)."""
    if bn_batches < 1 or bn_batch_size < 1:
        raise ValueError(f"bn_batches and bn_batch_size must be positive, got {bn_batches} and {bn_batch_size}")
    batches = [calibration[i * bn_batch_size : (i + 1) * bn_batch_size] for i in range(bn_batches)]
    batches = [b for b in batches if len(b) > 0]
    if not batches:
        raise ValueError("the calibration set is empty: pass training inputs to re-estimate BatchNorm statistics")
    return batches


def reestimate_bn(worker: nn.Module, state: State, batches: list[torch.Tensor]) -> State:
    """Return `state` with fresh BN statistics: a cumulative average (momentum=None) over `batches`, as swa_utils.update_bn.

    `worker` is a private copy whose BN momenta are already None. Only the BN layers run in train mode,
    so dropout does not perturb the statistics (identical to update_bn for dropout-free nets).
    """
    state = dict(state)
    for name, _ in _bn_modules(worker):
        p = f"{name}." if name else ""
        # Fresh tensors: the forward updates them in place, and they must not alias another alpha's state.
        state[p + "running_mean"] = torch.zeros_like(state[p + "running_mean"])
        state[p + "running_var"] = torch.ones_like(state[p + "running_var"])
        state[p + "num_batches_tracked"] = torch.zeros_like(state[p + "num_batches_tracked"])
    bns = [m for _, m in _bn_modules(worker)]
    for m in bns:
        m.train()
    try:
        with torch.no_grad():
            for xb in batches:
                functional_call(worker, state, (xb,), strict=True)
    finally:
        for m in bns:
            m.eval()
    return state


def make_worker(model: nn.Module, reestimate: bool) -> nn.Module:
    """Return a private eval-mode copy of the template, so nothing the caller holds is ever modified."""
    worker = copy.deepcopy(model)
    worker.eval()
    worker.requires_grad_(False)
    if reestimate:
        for _, bn in _bn_modules(worker):
            bn.momentum = None  # cumulative moving average, as torch.optim.swa_utils.update_bn
    return worker


def resolve_bn_mode(model: nn.Module, bn_mode: str, calibration: torch.Tensor | None) -> str:
    if bn_mode not in BN_MODES:
        raise ValueError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
    if not has_batchnorm(model):
        return "none"
    mode = "reestimate" if bn_mode == "auto" else bn_mode
    if mode == "reestimate" and calibration is None:
        raise ValueError(
            "the model has BatchNorm and bn_mode='reestimate' (the default for BN nets) needs training inputs: "
            "pass calibration=x_train (a tensor on the model's device), or choose bn_mode='interpolate' or 'endpoint'"
        )
    return mode
