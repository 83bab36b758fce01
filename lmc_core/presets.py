"""Presets: named study configs calibrated on the team's 2-core CPUs (shared/reference/calibration.md).

A preset is a set of overrides on the StudyConfig defaults; `preset(name)` validates it. The
expected numbers in each description are what calibration.md measured, so a run can be checked
against them.
"""

from __future__ import annotations

import copy
from typing import Any

from .config import StudyConfig

_MNIST1D_SHIFT = {"name": "mnist1d", "augmentation": "shift", "max_shift": 3}

PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "description": "Every stage, tiny: MNIST-1D MLP, lr 0.1, 20 epochs; IMP + random, 2 rounds at k = 625; dense sweep k in {0, 625}. Under a minute on 2 cores.",
        "config": {
            "name": "smoke",
            "data": _MNIST1D_SHIFT,
            "model": {"arch": "mlp", "hidden": [100, 100]},
            "train": {"lr": 0.1, "batch_size": 32, "epochs": 20, "schedule": "cosine"},
            "pruning": {"mask_sources": ["dense", "imp", "random"], "rounds": 2, "rewind_steps": [625]},
            "stability": {"pairs": [[100, 101]], "alphas": 31},
            "sweep": {"steps": [0, 625], "masks": ["dense"]},
        },
    },
    "mnist1d": {
        "description": "The default demo. MNIST-1D ConvNet (3 x conv k5 stride 2, width 64), SGD lr 0.05, batch 32, cosine, 40 epochs, shift 3. "
        "Expect dense ~97.5 %, barrier > 2 points at k = 0 and ~1 at k = 125; IMP stable from ~36 % sparsity at k = 0, random unstable.",
        "config": {
            "name": "mnist1d",
            "data": _MNIST1D_SHIFT,
            "model": {"arch": "convnet", "depth": 3, "width": 64, "kernel_size": 5, "stride": 2, "norm": "none", "pooling": "none"},
            "train": {"lr": 0.05, "batch_size": 32, "epochs": 40, "schedule": "cosine"},
            "pruning": {"mask_sources": ["dense", "imp", "random"], "rounds": 4, "rewind_steps": [0, 125]},
            "stability": {"pairs": [[100, 101]], "alphas": 31},
            "sweep": {"steps": [0, 25, 125, 500], "masks": ["dense"]},
        },
    },
    "mnist1d-mlp": {
        "description": "The textbook contrast: MNIST-1D MLP 40-100-100-10, lr 0.1, 40 epochs. IMP at init (k = 0) stays unstable "
        "(barrier 22-40 points), IMP rewound to k = 1250 is stable and matching; random pruning is unstable.",
        "config": {
            "name": "mnist1d-mlp",
            "data": _MNIST1D_SHIFT,
            "model": {"arch": "mlp", "hidden": [100, 100]},
            "train": {"lr": 0.1, "batch_size": 32, "epochs": 40, "schedule": "cosine"},
            "pruning": {"mask_sources": ["dense", "imp", "random"], "rounds": 4, "rewind_steps": [0, 1250]},
            "stability": {"pairs": [[100, 101], [102, 103]], "alphas": 31},
            "sweep": {"steps": [0, 125, 500, 1250], "masks": ["dense"]},
        },
    },
    "digits-stable": {
        "description": "The control that is stable at init (the LeNet/MNIST analogue): digits MLP 64-100-100-10, lr 0.05, 40 epochs; barrier <= 0.2 points.",
        "config": {
            "name": "digits-stable",
            "data": {"name": "digits"},
            "model": {"arch": "mlp", "hidden": [100, 100]},
            "train": {"lr": 0.05, "batch_size": 32, "epochs": 40, "schedule": "cosine"},
            "pruning": {"mask_sources": ["dense", "imp", "random"], "rounds": 4, "rewind_steps": [0]},
            "stability": {"pairs": [[100, 101], [102, 103]], "alphas": 31},
        },
    },
}


def preset_names() -> list[str]:
    return list(PRESETS)


def preset(name: str, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Return the validated config of preset `name`, with nested `overrides` merged on top."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
    raw = copy.deepcopy(PRESETS[name]["config"])
    return StudyConfig.model_validate(merge(raw, overrides or {}))


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return `base` with `overrides` merged in recursively (dicts merge, everything else replaces)."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
