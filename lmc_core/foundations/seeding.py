"""Explicit seeds: every random stream in lmc_core is a torch.Generator made here, never the global RNG."""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, purpose: str) -> int:
    """Return a 63-bit seed for `purpose` derived from `seed`, so independent streams never share state."""
    digest = hashlib.sha256(f"{seed}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generator(seed: int, purpose: str) -> torch.Generator:
    """Return a CPU generator seeded for `purpose`; CPU so streams are identical on every device."""
    g = torch.Generator()
    g.manual_seed(derive_seed(seed, purpose))
    return g
