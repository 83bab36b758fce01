"""Unstructured magnitude pruning with explicit boolean masks (open_lth semantics, deterministic ties).

Masks are plain `{parameter name: bool tensor}` dicts applied after every optimizer step, not
`torch.nn.utils.prune` re-parametrisations, which break deepcopy and torch.func.
Prunable weights are the weights of every Conv and Linear layer, first layer and classifier included
(as in the paper's code); biases and normalisation parameters are never pruned.
"""

from __future__ import annotations

import torch
from torch import nn

from lmc_core.foundations.seeding import generator
from lmc_core.foundations.types import Masks, State
from lmc_core.models import prunable_modules


def prunable_names(model: nn.Module) -> list[str]:
    """Return the names of the prunable weights (conv and linear), in module order: first layer first, classifier last."""
    return [f"{name}.weight" if name else "weight" for name, _ in prunable_modules(model)]


def dense_masks(model: nn.Module) -> Masks:
    """Return all-True masks for every prunable weight of `model`."""
    params = dict(model.named_parameters())
    return {name: torch.ones_like(params[name], dtype=torch.bool, device="cpu") for name in prunable_names(model)}


def eligible_names(names: list[str], keep_first_dense: bool = False, keep_last_dense: bool = False) -> list[str]:
    """Return the prunable names that may lose weights, leaving out the first and/or last layer on request."""
    out = list(names)
    if keep_first_dense and out:
        out = out[1:]
    if keep_last_dense and out:
        out = out[:-1]
    if not out:
        raise ValueError("no layer left to prune: keep_first_dense / keep_last_dense exclude every prunable layer")
    return out


def round_sparsity(rate: float, rounds: int) -> float:
    """Return the sparsity of the eligible weights after `rounds` rounds at `rate`: 1 - (1 - rate)^rounds."""
    return 1.0 - (1.0 - rate) ** rounds


def sparsity(masks: Masks) -> float:
    """Return the fraction of masked-out weights over all weights the masks cover."""
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    return 1.0 - kept / total if total else 0.0


def layer_sparsity(masks: Masks) -> dict[str, float]:
    """Return each layer's fraction of masked-out weights."""
    return {name: 1.0 - float(m.sum()) / m.numel() for name, m in masks.items()}


def _keep_count(n: int, target_sparsity: float) -> int:
    # Rounding the target (not each round's step) keeps 1 - (1 - rate)^r exact to one weight at every round.
    return int(round(n * (1.0 - target_sparsity)))  # noqa: RUF046 - int() also covers a numpy or tensor sparsity


def _keep_top(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Return a bool mask keeping the `keep` largest scores; ties go to the lower flat index (stable sort)."""
    order = torch.sort(scores, descending=True, stable=True).indices
    mask = torch.zeros(scores.numel(), dtype=torch.bool)
    mask[order[:keep]] = True
    return mask


def magnitude_prune(
    state: State,
    masks: Masks,
    target_sparsity: float,
    *,
    scope: str = "global",
    eligible: list[str] | None = None,
) -> Masks:
    """Return new masks keeping the largest-magnitude surviving weights so the eligible weights reach `target_sparsity`.

    Already-pruned weights rank below every surviving weight, so masks only ever shrink. `scope` is
    "global" (one ranking across layers, Frankle & Carbin) or "layerwise" (each layer to the target).
    """
    names = list(masks) if eligible is None else eligible
    unknown = [n for n in names if n not in masks or n not in state]
    if unknown:
        raise KeyError(f"weights to prune not found in masks/state: {unknown}")
    if not 0.0 <= target_sparsity < 1.0:
        raise ValueError(f"target sparsity must be in [0, 1), got {target_sparsity}")
    # float64 scores; pruned entries get -1 so they are chosen for removal first.
    scores = {
        n: torch.where(masks[n], state[n].detach().abs().double().cpu(), torch.tensor(-1.0, dtype=torch.float64)).flatten() for n in names
    }
    new = {n: m.clone() for n, m in masks.items()}
    if scope == "global":
        flat = torch.cat([scores[n] for n in names])
        keep = _keep_count(flat.numel(), target_sparsity)
        if keep > int(sum(int(masks[n].sum()) for n in names)):
            raise ValueError(f"target sparsity {target_sparsity:.4f} is below the current sparsity; masks only shrink")
        kept = _keep_top(flat, keep)
        offset = 0
        for n in names:
            size = scores[n].numel()
            new[n] = kept[offset : offset + size].view_as(masks[n])
            offset += size
    elif scope == "layerwise":
        for n in names:
            new[n] = _keep_top(scores[n], _keep_count(scores[n].numel(), target_sparsity)).view_as(masks[n])
    else:
        raise ValueError(f"pruning scope must be 'global' or 'layerwise', got {scope!r}")
    return new


def random_masks_like(reference: Masks, seed: int) -> Masks:
    """Return random masks with exactly the reference's number of kept weights in every layer (the random-pruning control)."""
    out: Masks = {}
    for name, ref in reference.items():
        g = generator(seed, f"random-mask:{name}")
        keep = int(ref.sum())
        order = torch.randperm(ref.numel(), generator=g)
        mask = torch.zeros(ref.numel(), dtype=torch.bool)
        mask[order[:keep]] = True
        out[name] = mask.view_as(ref)
    return out


def rewind(target: nn.Module, rewind_state: State, masks: Masks | None, kept: State | None = None) -> None:
    """Load the rewind point's values into `target` and zero its pruned weights (Frankle et al. 2020, Algorithm 2).

    `kept` (None: a full rewind) holds the entries that do not go back to the rewind point: the authors' code
    rewinds only the conv and linear weights (`weight_orig`), so biases, normalisation parameters and running
    statistics keep the values of the trained network that was pruned (`pruning.rewind = "weights"`).
    """
    state = rewind_state
    if kept:
        prunable = set(prunable_names(target))
        wrong = sorted(set(kept) & prunable)
        if wrong:
            raise ValueError(f"kept entries {wrong} are prunable weights, which always rewind: keep only biases, norms and buffers")
        unknown = sorted(set(kept) - set(rewind_state))
        if unknown:
            raise KeyError(f"kept entries {unknown} are not in the rewind point's state: was the kept state saved for another model?")
        state = {**rewind_state, **kept}
    target.load_state_dict(state)
    apply_masks(target, masks)


def kept_entries(state: State, model: nn.Module) -> State:
    """Return the entries of `state` that a weights-only rewind keeps: everything but the prunable (conv and linear) weights."""
    prunable = set(prunable_names(model))
    return {n: v for n, v in state.items() if n not in prunable}


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Masks | None) -> None:
    """Zero the pruned weights of `model` in place."""
    if not masks:
        return
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].mul_(mask.to(params[name].device, params[name].dtype))
