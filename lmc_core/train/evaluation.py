"""Loss and error of a classifier on a held-out tensor split, the measurement every stage shares."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Metrics:
    """Mean cross-entropy and top-1 error (a fraction in [0, 1]) over a split."""

    loss: float
    error: float

    @property
    def accuracy(self) -> float:
        return 1.0 - self.error

    def as_dict(self) -> dict[str, float]:
        return {"loss": self.loss, "error": self.error, "accuracy": self.accuracy}


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> Metrics:
    """Return the mean loss and error of `model` on (x, y), in eval mode; the model's mode is restored."""
    was_training = model.training
    model.eval()
    try:
        loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
        wrong = torch.zeros((), dtype=torch.int64, device=x.device)
        for start in range(0, len(x), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            logits = model(xb)
            loss_sum += F.cross_entropy(logits, yb, reduction="sum").double()
            wrong += (logits.argmax(dim=1) != yb).sum()
        n = len(x)
        return Metrics(loss=float(loss_sum) / n, error=float(wrong) / n)
    finally:
        model.train(was_training)
