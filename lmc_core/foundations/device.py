"""Device selection: CUDA when present, else CPU."""

from __future__ import annotations

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """Return the torch device for 'auto', 'cpu' or 'cuda' ('cuda' without a GPU is an error, not a silent fallback)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for, but torch sees no CUDA device; use device='auto' or 'cpu'")
    return torch.device(name)
