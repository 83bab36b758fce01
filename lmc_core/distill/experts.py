"""Expert trajectories for trajectory matching (MTT): networks trained on real data, parameters kept after every epoch.

Experts are the expensive, reusable half of MTT: a study stores them once as an artifact
(`experts/<hash>`, one safetensors file per expert) and every distillation with the same data,
network and expert settings reuses them.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmc_core.data.augment import BatchAugmenter
from lmc_core.data.dataset import Dataset
from lmc_core.foundations.config import DataConfig, ModelConfig, MTTSettings, TrainConfig
from lmc_core.foundations.events import Callback, Event, no_callback
from lmc_core.foundations.seeding import derive_seed
from lmc_core.foundations.storage import load_json, load_tensors, save_json, save_tensors
from lmc_core.models import build_model
from lmc_core.train.loop import steps_per_epoch, train


def flat_parameters(model: nn.Module) -> torch.Tensor:
    """Return the model's parameters concatenated in `named_parameters()` order, detached."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def unflatten(flat: torch.Tensor, names: list[str], shapes: list[tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Return {name: view of `flat`} for a functional forward; autograd flows through the views."""
    sizes = [math.prod(shape) for shape in shapes]
    if sum(sizes) != flat.numel():
        raise ValueError(f"flat parameter vector has {flat.numel()} entries, the network {sum(sizes)}")
    # names and shapes describe one network (Trajectories keeps them together); split gives one part per shape.
    return {name: part.view(shape) for name, shape, part in zip(names, shapes, torch.split(flat, sizes), strict=True)}


@dataclass
class Trajectories:
    """params[e, t] = expert e's flattened parameters after t epochs (t = 0 is its init)."""

    params: torch.Tensor  # (experts, epochs + 1, P)
    names: list[str]
    shapes: list[tuple[int, ...]]
    info: dict[str, Any]

    @property
    def experts(self) -> int:
        return self.params.shape[0]

    @property
    def epochs(self) -> int:
        return self.params.shape[1] - 1

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        for e in range(self.experts):
            save_tensors(folder / f"expert_{e:03d}.safetensors", {"trajectory": self.params[e]})
        save_json(
            folder / "experts.json", {"experts": self.experts, "names": self.names, "shapes": [list(s) for s in self.shapes], **self.info}
        )

    @classmethod
    def load(cls, folder: str | Path) -> Trajectories:
        folder = Path(folder)
        meta_file = folder / "experts.json"
        if not meta_file.is_file():
            raise FileNotFoundError(f"{folder} holds no expert trajectories (no experts.json); train them with an MTT synthetic set")
        meta = load_json(meta_file)
        params = torch.stack([load_tensors(folder / f"expert_{e:03d}.safetensors")["trajectory"] for e in range(meta["experts"])])
        info = {k: v for k, v in meta.items() if k not in ("experts", "names", "shapes")}
        return cls(params, list(meta["names"]), [tuple(s) for s in meta["shapes"]], info)


def experts_hash(data: DataConfig, model: ModelConfig, settings: MTTSettings, dsa: str, seed: int) -> str:
    """Return the id of a set of experts: everything that changes them, and nothing that does not."""
    payload = {
        "data": data.model_dump(mode="json"),
        "model": model.model_dump(mode="json"),
        "dsa": dsa,
        "seed": seed,
        "experts": settings.model_dump(mode="json", include={"experts", "expert_train_epochs", "lr_teacher", "expert_batch"}),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def expert_train_config(settings: MTTSettings) -> TrainConfig:
    """MTT's buffer.py recipe: plain SGD at a constant lr_teacher, no momentum, no weight decay."""
    return TrainConfig(
        lr=settings.lr_teacher,
        momentum=0.0,
        weight_decay=0.0,
        batch_size=settings.expert_batch,
        epochs=settings.expert_train_epochs,
        schedule="constant",
    )


def train_experts(
    data: Dataset,
    model_cfg: ModelConfig,
    settings: MTTSettings,
    augmenter: BatchAugmenter,
    seed: int,
    *,
    stage: str = "experts",
    callback: Callback = no_callback,
) -> tuple[Trajectories, int]:
    """Train `settings.experts` networks from their own inits and return their trajectories and the real examples spent."""
    cfg = expert_train_config(settings)
    spe = steps_per_epoch(cfg, len(data.x_train))
    trajectories, examples = [], 0
    names: list[str] = []
    shapes: list[tuple[int, ...]] = []
    for e in range(settings.experts):
        model = build_model(model_cfg, data.input_shape, data.num_classes, derive_seed(seed, f"expert-{e}")).to(data.x_train.device)
        names = [n for n, _ in model.named_parameters()]
        shapes = [tuple(p.shape) for p in model.parameters()]
        points = [flat_parameters(model).cpu()]
        for epoch in range(settings.expert_train_epochs):
            # One call per epoch so the parameters can be kept; without momentum a fresh optimizer per
            # call changes nothing, and each epoch gets its own data-order and augmentation stream.
            noise = derive_seed(seed, f"expert-{e}-epoch-{epoch}")
            res = train(
                model,
                data,
                cfg,
                augmenter,
                data_seed=noise,
                augment_seed=noise,
                start_step=epoch * spe,
                end_step=(epoch + 1) * spe,
                stage=f"{stage}[{e}]",
            )
            examples += res.examples
            points.append(flat_parameters(model).cpu())
        trajectories.append(torch.stack(points))
        callback(Event(stage, e + 1, settings.experts, {"train_loss": res.history[-1]["train_loss"]}))
    info = {"epochs": settings.expert_train_epochs, "seed": seed, "examples": examples, "train": cfg.model_dump(mode="json")}
    return Trajectories(torch.stack(trajectories), names, shapes, info), examples
