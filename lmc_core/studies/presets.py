"""Presets: named study configs calibrated on the team's 2-core CPUs (measurements in docs/results.md).

A preset is a set of overrides on the StudyConfig defaults; `preset(name)` validates it. The
expected numbers in each description are what those calibration runs measured, so a run can be checked
against them.
"""

from __future__ import annotations

import copy
from typing import Any

from lmc_core.foundations.config import StudyConfig
from lmc_core.studies.validation import validate_config

_MNIST1D_SHIFT = {"name": "mnist1d", "augmentation": "shift", "max_shift": 3}

PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "description": "Every stage, tiny: MNIST-1D MLP, lr 0.1, 20 epochs; IMP, random, distilled IMP (a 30-step DM set) and "
        "its matched real subset, "
        "2 rounds at k = 625 (full rewind); "
        "dense sweep k in {0, 625}; a loss surface and the Hessian of each round-2 subnetwork. "
        "87 s on 2 cores (measured while another job shared them).",
        "config": {
            "name": "smoke",
            "data": _MNIST1D_SHIFT,
            "model": {"arch": "mlp", "hidden": [100, 100]},
            "train": {"lr": 0.1, "batch_size": 32, "epochs": 20, "schedule": "cosine"},
            "pruning": {"mask_sources": ["dense", "imp", "random", "distilled.dm", "subset.dm"], "rounds": 2, "rewind_steps": [625]},
            "stability": {"pairs": [[100, 101]], "alphas": 31},
            "sweep": {"steps": [0, 625], "masks": ["dense"]},
            "synthetic": {
                "sets": {"dm": {"method": "dm", "ipc": 10, "iterations": 30, "lr_img": 10.0, "batch_real": 64}},
                "train": {
                    "lr": 0.01,
                    "momentum": 0.9,
                    "weight_decay": 5e-4,
                    "batch_size": 50,
                    "epochs": 100,
                    "schedule": "multistep",
                    "milestones": [67, 83],
                    "gamma": 0.2,
                },
                "evaluate_runs": 1,
            },
            "analysis": {
                "rounds": [2],
                "surface": {"plane": "copies", "resolution": 15, "examples": 500},
                "hessian": {
                    "examples": 256,
                    "top_k": 3,
                    "trace_max_hvps": 120,
                    "density_runs": 2,
                    "density_steps": 30,
                    "diagonal_samples": 30,
                },
            },
        },
    },
    "mnist1d": {
        "description": "The default demo. MNIST-1D ConvNet (3 x conv k5 stride 2, width 64), SGD lr 0.05, batch 32, cosine, "
        "40 epochs, shift 3; full rewind. "
        "Measured once (one seed pair, docs/results.md): dense 97.3 %, barrier 22.2 points at k = 0 and 1.0 at k = 125; IMP at k = 0: "
        "4.2 / 3.4 / 0.2 / 0.1 points at 20 / 36 / 48.8 / 59 % sparsity; random 6.3-7.8 points.",
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
        "description": "The textbook contrast: MNIST-1D MLP 40-100-100-10, lr 0.1, 40 epochs; full rewind. "
        "Measured in the calibration run of "
        "this setting (one seed pair, docs/results.md), at 59 % sparsity: IMP at k = 0 80.2 % with a 22.4-point barrier, "
        "rewound to k = 1250 83.9 % with 0.8; random 28.0 and 3.5 points.",
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
        "description": "The control that is stable at init (the LeNet/MNIST analogue): digits MLP 64-100-100-10, lr 0.05, 40 epochs; "
        "full rewind. "
        "Measured in the calibration runs of the dense network (two seed pairs with their own inits, the last partial batch "
        "dropped; docs/results.md): barriers 0.2 and 0.1 points at 98.1 %.",
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


# ---- the paper's experiment ---------------------------------------------------------------------------
# Distilled pruning (McDermott & Cummings 2023) on MNIST-1D at CPU scale: IMP rewound to init (k = 0) whose
# training runs on DM and MTT sets (10 signals per class), next to real IMP, IMP on a random real subset of
# the same size, random pruning and the dense network; stability at every round.
_PAPER_MINI_SYNTHETIC: dict[str, Any] = {
    "sets": {
        # Tuned on MNIST-1D (benchmarks/bench_distill.py): the published pixel lrs (DM 1, MTT 1000 on ZCA'd CIFAR) barely move or
        # wreck normalised 1-D signals; MTT's experts need a higher lr than 0.01 to travel in 12 epochs, and its lr_lr 1e-4 to follow.
        "dm": {"method": "dm", "ipc": 10, "iterations": 300, "lr_img": 10.0, "batch_real": 128, "seed": 0},
        "mtt": {
            "method": "mtt",
            "ipc": 10,
            "iterations": 150,
            "lr_img": 5.0,
            "seed": 0,
            "mtt": {
                "experts": 5,
                "expert_train_epochs": 12,
                "lr_teacher": 0.05,
                "expert_batch": 64,
                "syn_steps": 40,
                "expert_epochs": 2,
                "max_start_epoch": 8,
                "lr_lr": 1e-4,
            },
        },
    },
    "train": {
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "batch_size": 50,
        "epochs": 300,
        "schedule": "multistep",
        "milestones": [200, 250],
        "gamma": 0.2,
    },
    "evaluate_runs": 3,
}
# Every synthetic set has its matched subset, trained with the same recipe and the set's learned lr: MTT's lr alone
# (0.086 against 0.01) could explain its masks, so subset.mtt, not subset.dm, is MTT's control.
_PAPER_MINI_SOURCES = ["dense", "imp", "distilled.dm", "distilled.mtt", "subset.dm", "subset.mtt", "random"]


def _paper_real_training(cutmix: float, eval_batch_size: int) -> dict[str, Any]:
    """The paper's real-data recipe: 300 epochs of SGD 0.01, momentum 0.9, wd 5e-4, batch 64, x0.2 at epochs 200 and 250."""
    return {
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "batch_size": 64,
        "epochs": 300,
        "schedule": "multistep",
        "milestones": [200, 250],
        "gamma": 0.2,
        "cutmix": cutmix,
        "eval_batch_size": eval_batch_size,
    }


def _paper_cifar(dataset: str, arch: str) -> dict[str, Any]:
    """The paper's full CIFAR protocol (McDermott & Cummings 2023, section 3), for a GPU and the CIFAR archives under ./data."""
    convnet3 = {"arch": "convnet", "depth": 3, "width": 128, "kernel_size": 3, "stride": 1, "norm": "instance", "pooling": "avg"}
    model = convnet3 if arch == "convnet3" else {"arch": "resnet18", "norm": "batch"}
    # IDC's condensation as `condense.py --reproduce` runs it on CIFAR (Kim et al. 2022; lmc_core.distill.methods.PUBLISHED):
    # ConvNet-3 with instance norm, factor 2; 2000 networks, 100 matches each, squared error on the conv weights' gradients;
    # between matches the network trains on 32 batches of 64 real images (its n_data=2000) with SGD 0.01, momentum 0.9,
    # wd 5e-4, CutMix p 0.5; IDC's DiffAug recipe while matching (color, crop, cutout) and training (color, crop).
    # IDC's train.py recipe (lmc_core.data.dsa.PAPER_STRATEGY, written out here: this module stays torch-free for the API):
    # flip and colour on every batch plus one of crop, scale, rotate; cutout is off because CutMix is on.
    paper_dsa = "idc:color_crop_flip_scale_rotate"
    idc = {
        "method": "dc",
        "factor": 2,
        "init": "real",
        "iterations": 2000,
        "lr_img": 0.005,
        "batch_real": 64,
        "model": convnet3,
        "dsa": "idc:color_crop_cutout",
        "dc": {
            "match": "mse",
            "layers": "conv",
            "net_data": "real",
            "outer_loop": 100,
            "inner_loop": 32,
            "lr_net": 0.01,
            "net_batch": 64,
            "net_momentum": 0.9,
            "net_weight_decay": 5e-4,
            "net_cutmix": 0.5,
            "net_dsa": "idc:color_crop",
        },
    }
    return {
        "description": f"The paper's protocol on {dataset.upper()} with "
        f"{'ConvNet-3 (instance norm, width 128)' if arch == 'convnet3' else 'the half-width ResNet-18'}: "
        "IDC-style sets (10 and 50 per class, factor 2; or import the published files with synthetic.sets.<name>.method=import), "
        "distilled IMP 10 x 20 % rewound to init (weights-only rewind, as the authors' code), IMP on a random real subset of "
        "each set's size, real IMP, random pruning; 300 real epochs (SGD 0.01, x0.2 at 200/250, "
        "IDC's DSA recipe + CutMix); "
        "stability at rounds 0, 4, 9 with 11 alphas. Needs a GPU and the CIFAR archive in ./data (days on a CPU).",
        "config": {
            "name": f"paper-{dataset}" + ("" if arch == "convnet3" else "-resnet18"),
            "data": {"name": dataset, "path": "data", "augmentation": "dsa", "dsa_strategy": paper_dsa},
            "model": model,
            "train": _paper_real_training(cutmix=0.5, eval_batch_size=500),
            "pruning": {
                "mask_sources": ["dense", "imp", "distilled.idc10", "distilled.idc50", "subset.idc10", "subset.idc50", "random"],
                "rounds": 10,
                "rewind_steps": [0],
                "rewind": "weights",  # the authors copy the init into weight_orig alone: biases and norms stay trained
            },
            "stability": {"pairs": [[0, 1]], "alphas": 11, "splits": ["test", "train"], "rounds": [0, 4, 9]},
            "synthetic": {
                "sets": {"idc10": {**idc, "ipc": 10}, "idc50": {**idc, "ipc": 50, "lr_img": 0.025}},
                "train": {
                    "lr": 0.01,
                    "momentum": 0.9,
                    "weight_decay": 5e-4,
                    "batch_size": 64,
                    "epochs": 1000,
                    "schedule": "multistep",
                    "milestones": [667, 833],
                    "gamma": 0.2,
                    "cutmix": 0.5,
                },
                "augmentation": paper_dsa,
                "evaluate_runs": 3,
            },
            "device": "auto",
        },
    }


PRESETS.update(
    {
        "paper-mini": {
            "description": "The paper's experiment on MNIST-1D with the ConvNet (lr 0.05, 20 epochs), full rewind to init: "
            "IMP trained on DM and MTT sets (10 per class) vs real IMP, IMP on a random real subset of each set's size "
            "(trained like its set, MTT's learned lr included), random pruning and dense; 4 rounds, stability at every round.",
            "config": {
                "name": "paper-mini",
                "data": _MNIST1D_SHIFT,
                "model": {"arch": "convnet", "depth": 3, "width": 64, "kernel_size": 5, "stride": 2, "norm": "none", "pooling": "none"},
                "train": {"lr": 0.05, "batch_size": 32, "epochs": 20, "schedule": "cosine"},
                "pruning": {"mask_sources": _PAPER_MINI_SOURCES, "rounds": 4, "rewind_steps": [0]},
                "stability": {"pairs": [[100, 101]], "alphas": 31},
                "synthetic": _PAPER_MINI_SYNTHETIC,
            },
        },
        "paper-mini-mlp": {
            "description": "The same experiment where real IMP at init stays unstable (MNIST-1D MLP, lr 0.1, 40 epochs; "
            "measured: barrier 22-40 "
            "points up to 59 % sparsity): do distilled masks make it stable? Full rewind; two seed pairs.",
            "config": {
                "name": "paper-mini-mlp",
                "data": _MNIST1D_SHIFT,
                "model": {"arch": "mlp", "hidden": [100, 100]},
                "train": {"lr": 0.1, "batch_size": 32, "epochs": 40, "schedule": "cosine"},
                "pruning": {"mask_sources": _PAPER_MINI_SOURCES, "rounds": 4, "rewind_steps": [0]},
                "stability": {"pairs": [[100, 101], [102, 103]], "alphas": 31},
                "synthetic": _PAPER_MINI_SYNTHETIC,
            },
        },
        "paper-mini-combined": {
            "description": "paper-mini's ConvNet with the authors' extensions: real IMP started from the DM set's round-2 "
            "distilled mask (combined.dm.r2, McDermott & Parhi 2025) beside distilled IMP on the DM set, its matched subset, "
            "real IMP, random pruning and dense, every mask found and tested from k = 0 and from k = 125 (one epoch); "
            "weights-only rewind, as the authors' code (biases keep the pruned network's values; pruning.rewind=full to "
            "compare); 4 rounds, stability at every round.",
            "config": {
                "name": "paper-mini-combined",
                "data": _MNIST1D_SHIFT,
                "model": {"arch": "convnet", "depth": 3, "width": 64, "kernel_size": 5, "stride": 2, "norm": "none", "pooling": "none"},
                "train": {"lr": 0.05, "batch_size": 32, "epochs": 20, "schedule": "cosine"},
                "pruning": {
                    "mask_sources": ["dense", "imp", "distilled.dm", "subset.dm", "combined.dm.r2", "random"],
                    "rounds": 4,
                    "rewind_steps": [0, 125],
                    "rewind": "weights",
                },
                "stability": {"pairs": [[100, 101]], "alphas": 31},
                "synthetic": {**_PAPER_MINI_SYNTHETIC, "sets": {"dm": _PAPER_MINI_SYNTHETIC["sets"]["dm"]}},
            },
        },
        "paper-cifar10": _paper_cifar("cifar10", "convnet3"),
        "paper-cifar10-resnet18": _paper_cifar("cifar10", "resnet18"),
        "paper-cifar100": _paper_cifar("cifar100", "convnet3"),
        "paper-cifar100-resnet18": _paper_cifar("cifar100", "resnet18"),
    }
)


# ---- the paper's clearest positive case: ResNet-10 on ImageNet-10 -----------------------------------------
# ImageNet-10 = the first 10 classes of IDC's misc/class100.txt, in that file's order, which is also the label order
# of IDC's ImageNet-10 sets (so an imported set's labels mean the same classes).
IMAGENET10_WNIDS = [
    "n02869837",
    "n01749939",
    "n02488291",
    "n02107142",
    "n13037406",
    "n02091831",
    "n04517823",
    "n04589890",
    "n03062245",
    "n01773797",
]


def _paper_imagenet10() -> dict[str, Any]:
    """The paper's ImageNet-10 protocol (McDermott & Cummings 2023, section 3) for a GPU and the user's ImageNet folder."""
    # IDC distils ImageNet-10 with ResNetAP-10 (instance norm, average-pool downsampling), L1 gradient distance, lr_img 3e-3,
    # 500 outer iterations, n_data 500, factor 3. Here: the ImageNet ResNet-10 with instance norm, squared error (the
    # distances on offer), 8 batches of 64 real images between matches (n_data 500), factor 2: 224 is not divisible by 3.
    idc = {
        "method": "dc",
        "factor": 2,
        "init": "real",
        "ipc": 10,
        "iterations": 500,
        "lr_img": 0.003,
        "batch_real": 64,
        "model": {"arch": "resnet10_imagenet", "norm": "instance"},
        "dsa": "idc:color_crop_cutout",
        "dc": {
            "match": "mse",
            "layers": "conv",
            "net_data": "real",
            "outer_loop": 100,
            "inner_loop": 8,
            "lr_net": 0.01,
            "net_batch": 64,
            "net_momentum": 0.9,
            "net_weight_decay": 5e-4,
            "net_cutmix": 1.0,
            "net_dsa": "idc:color_crop",
        },
    }
    return {
        "description": "The paper's clearest positive case: the ImageNet ResNet-10 (BatchNorm) on ImageNet-10, the first 10 "
        "classes of IDC's class100.txt, read from your own ImageNet folder ./data/imagenet (train/ and val/ with one folder "
        "per wnid; nothing downloads), 224 x 224, ImageNet mean/std. An IDC-style set made here (10 per class, factor 2: "
        "IDC's published sets use factor 3, which 224 does not divide), distilled IMP 10 x 20 % rewound to init (weights-only "
        "rewind, as the authors' code; 1500 epochs on the set, IDC's rule for 40 decoded images per class), IMP on a random "
        "real subset of the same size, real IMP, random pruning; 300 real epochs (SGD 0.01, "
        "x0.2 at 200/250, batch 64, CutMix p 1; DSA flip + colour + crop or scale in place of RandomResizedCrop + jitter "
        "+ lighting); stability at rounds 0, 4, 9 with 11 alphas. Needs a GPU (about 8 GB of float32 images) and the data.",
        "config": {
            "name": "paper-imagenet10",
            "data": {
                "name": "image_folder",
                "path": "data/imagenet",
                "classes": IMAGENET10_WNIDS,
                "image_size": 224,
                "normalize_stats": "imagenet",
                "augmentation": "dsa",
                "dsa_strategy": "idc:color_crop_flip_scale",
            },
            "model": {"arch": "resnet10_imagenet", "norm": "batch"},
            "train": _paper_real_training(cutmix=1.0, eval_batch_size=250),
            "pruning": {
                "mask_sources": ["dense", "imp", "distilled.idc10", "subset.idc10", "random"],
                "rounds": 10,
                "rewind_steps": [0],
                "rewind": "weights",  # the authors copy the init into weight_orig alone: biases and norms stay trained
            },
            "stability": {"pairs": [[0, 1]], "alphas": 11, "splits": ["test", "train"], "rounds": [0, 4, 9]},
            "synthetic": {
                "sets": {"idc10": idc},
                "train": {
                    "lr": 0.01,
                    "momentum": 0.9,
                    "weight_decay": 5e-4,
                    "batch_size": 64,
                    "epochs": 1500,
                    "schedule": "multistep",
                    "milestones": [1000, 1250],
                    "gamma": 0.2,
                    "cutmix": 1.0,
                },
                "augmentation": "idc:color_crop_flip_scale_rotate",
                "evaluate_runs": 3,
            },
            "device": "auto",
        },
    }


PRESETS["paper-imagenet10"] = _paper_imagenet10()


def preset_names() -> list[str]:
    return list(PRESETS)


def preset(name: str, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Return the validated config of preset `name`, with nested `overrides` merged on top."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}")
    raw = copy.deepcopy(PRESETS[name]["config"])
    return validate_config(merge(raw, overrides or {}))


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return `base` with `overrides` merged in recursively (dicts merge, everything else replaces)."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out
