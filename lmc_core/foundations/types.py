"""Types every layer shares, defined once. Imports torch: torch-free modules import it under TYPE_CHECKING only."""

from __future__ import annotations

from typing import TypeAlias

import torch

State: TypeAlias = dict[str, torch.Tensor]
"""A state dict: parameter and buffer name -> tensor."""

Masks: TypeAlias = dict[str, torch.Tensor]
"""Pruning masks: prunable parameter name -> bool tensor of its shape (True = kept)."""

Batch: TypeAlias = tuple[torch.Tensor, torch.Tensor]
"""Inputs and integer labels."""

Splits: TypeAlias = dict[str, tuple[torch.Tensor, torch.Tensor]]
"""Named evaluation splits ('train', 'test') -> (inputs, labels)."""
