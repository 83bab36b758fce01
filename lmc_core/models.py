"""The networks of the study: an MLP, a plain ConvNet (1-D or 2-D), the half-width CIFAR ResNet-10/18 and the
ImageNet ResNet-10/18 (7x7 stride-2 stem and max-pool, widths 64-512).

Every model is built from standard, stateless-in-forward modules (no in-place ops, hooks, lazy
modules or randomness), so it works with deepcopy, `torch.func.functional_call`, `torch.vmap`
over stacked parameters and double backward. Pruning relies on module order: the first
Conv/Linear in `named_modules()` is the input layer and the last one is the classifier.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import pairwise
from typing import Any, ClassVar, TypeAlias, cast

import torch
from torch import nn

from lmc_core.foundations.config import ModelConfig
from lmc_core.foundations.registry import Registry

Prunable: TypeAlias = nn.Conv1d | nn.Conv2d | nn.Linear
"""A prunable layer: pruning masks its `weight`."""

PRUNABLE_TYPES: tuple[type[Prunable], ...] = (nn.Conv1d, nn.Conv2d, nn.Linear)

NormFactory = Callable[[int], nn.Module]


# ----------------------------------------------------------------------------- helpers


def _norm_factory(kind: str, dims: int, groups: int) -> NormFactory:
    """Return a function channels -> normalisation module (nn.Identity for 'none')."""
    if kind == "none":
        return lambda c: nn.Identity()
    if kind == "instance":
        # IDC's "instance norm": one group per channel, affine, no running statistics, so the
        # model stays a pure function of its parameters (vmap-able, no BN path issues).
        return lambda c: nn.GroupNorm(c, c, affine=True)
    if kind == "group":

        def group(c: int) -> nn.Module:
            if c % groups != 0:
                raise ValueError(f"norm='group' needs channels divisible by groups: {c} channels, {groups} groups")
            return nn.GroupNorm(groups, c, affine=True)

        return group
    if kind == "batch":
        return lambda c: nn.BatchNorm1d(c) if dims == 1 else nn.BatchNorm2d(c)
    raise ValueError(f"unknown norm {kind!r}; expected none, instance, group or batch")


def prunable_modules(model: nn.Module) -> list[tuple[str, Prunable]]:
    """Return (name, module) for every Conv1d/Conv2d/Linear, in `named_modules()` order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)]


# ----------------------------------------------------------------------------- architectures


class MLP(nn.Module):
    """Flatten -> (Linear -> ReLU) per hidden width -> Linear classifier."""

    def __init__(self, input_shape: tuple[int, ...], hidden: list[int], num_classes: int):
        super().__init__()
        widths = [math.prod(input_shape), *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for w_in, w_out in pairwise(widths):
            layers += [nn.Linear(w_in, w_out), nn.ReLU()]
        layers.append(nn.Linear(widths[-1], num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.layers(x))


class ConvNet(nn.Module):
    """`depth` blocks of conv -> norm -> ReLU -> 2x pool, then Flatten -> Linear (Conv1d or Conv2d by input rank)."""

    def __init__(self, cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int):
        super().__init__()
        if len(input_shape) == 1:
            raise ValueError(f"arch='convnet' needs a (C, L) or (C, H, W) input, got a vector {input_shape}; use arch='mlp'")
        dims = len(input_shape) - 1
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        pools = {"avg": nn.AvgPool1d if dims == 1 else nn.AvgPool2d, "max": nn.MaxPool1d if dims == 1 else nn.MaxPool2d}
        norm = _norm_factory(cfg.norm, dims, cfg.groups)

        blocks: list[nn.Module] = []
        c_in = input_shape[0]
        for _ in range(cfg.depth):
            blocks.append(conv(c_in, cfg.width, cfg.kernel_size, stride=cfg.stride, padding=cfg.kernel_size // 2, bias=True))
            if cfg.norm != "none":
                blocks.append(norm(cfg.width))
            blocks.append(nn.ReLU())
            if cfg.pooling != "none":
                blocks.append(pools[cfg.pooling](2))
            c_in = cfg.width
        self.features = nn.Sequential(*blocks)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(self._trunk_features(input_shape), num_classes)

    def _trunk_features(self, input_shape: tuple[int, ...]) -> int:
        """Return the flattened trunk output size, by a dry forward of zeros (no RNG, no BN stat update)."""
        self.features.eval()  # eval: BatchNorm must not update its running stats on the dummy batch
        try:
            with torch.no_grad():
                out: torch.Tensor = self.features(torch.zeros(1, *input_shape))
        except RuntimeError as e:
            raise ValueError(f"convnet trunk does not fit input {input_shape}: {e}") from e
        finally:
            self.features.train()
        if out.numel() == 0:
            raise ValueError(f"convnet trunk reduces input {input_shape} to nothing; use fewer blocks, stride 1 or no pooling")
        return out.numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.classifier(self.flatten(self.features(x))))


class BasicBlock(nn.Module):
    """conv3x3-norm-ReLU-conv3x3-norm plus a shortcut (1x1 conv + norm when the shape changes), ReLU after the add."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: NormFactory):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.norm1 = norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.norm2 = norm(c_out)
        if stride != 1 or c_in != c_out:
            self.shortcut: nn.Module = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), norm(c_out))
        else:
            self.shortcut = nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return cast(torch.Tensor, self.relu(out + self.shortcut(x)))


class ResNet(nn.Module):
    """A ResNet of BasicBlocks in four stages, with either of the paper's two stems.

    stem="cifar": the half-width CIFAR ResNet of McDermott & Cummings 2023 (IDC's `resnet10_bn` / `resnet18_bn`):
    3x3 stride-1 stem, no max-pool, widths 32/64/128/256. stem="imagenet": the ImageNet ResNet (He et al. 2016)
    the paper uses on ImageNet-10: 7x7 stride-2 stem, 3x3 stride-2 max-pool, widths 64/128/256/512.
    """

    WIDTHS: ClassVar[dict[str, tuple[int, ...]]] = {"cifar": (32, 64, 128, 256), "imagenet": (64, 128, 256, 512)}

    def __init__(
        self,
        blocks_per_stage: int,
        input_shape: tuple[int, ...],
        num_classes: int,
        norm_kind: str,
        groups: int,
        stem: str = "cifar",
    ):
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"ResNets take (C, H, W) images, got input shape {input_shape}; use arch='convnet' or 'mlp'")
        if stem not in self.WIDTHS:
            raise ValueError(f"unknown ResNet stem {stem!r}; expected 'cifar' or 'imagenet'")
        self.widths = self.WIDTHS[stem]
        norm = _norm_factory(norm_kind, 2, groups)
        if stem == "cifar":
            self.stem = nn.Conv2d(input_shape[0], self.widths[0], 3, stride=1, padding=1, bias=False)
        else:
            self.stem = nn.Conv2d(input_shape[0], self.widths[0], 7, stride=2, padding=3, bias=False)
        self.stem_norm = norm(self.widths[0])
        self.relu = nn.ReLU()
        # Only the ImageNet stem pools; the CIFAR model keeps exactly its earlier modules (and state-dict keys).
        self.stem_pool: nn.Module | None = nn.MaxPool2d(3, stride=2, padding=1) if stem == "imagenet" else None

        stages: list[nn.Module] = []
        c_in = self.widths[0]
        for i, c_out in enumerate(self.widths):
            stage = [BasicBlock(c_in, c_out, 1 if i == 0 else 2, norm)]
            stage += [BasicBlock(c_out, c_out, 1, norm) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*stage))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(self.widths[-1], num_classes)  # defined last: the classifier must be the last Linear

        # Kaiming normal (fan_out) for convs, as in the paper's code; the Linear keeps PyTorch's default.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.stem_norm(self.stem(x)))
        if self.stem_pool is not None:
            x = self.stem_pool(x)
        x = self.stages(x)
        return cast(torch.Tensor, self.fc(self.flatten(self.pool(x))))


# ----------------------------------------------------------------------------- public API


def mlp(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Return the MLP of `cfg.hidden` widths."""
    return MLP(input_shape, list(cfg.hidden), num_classes)


def convnet(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Return the ConvNet of `cfg.depth` blocks of `cfg.width` channels."""
    return ConvNet(cfg, input_shape, num_classes)


def resnet10(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Return the half-width CIFAR ResNet-10: one basic block per stage."""
    return ResNet(1, input_shape, num_classes, cfg.norm, cfg.groups)


def resnet18(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Return the half-width CIFAR ResNet-18: two basic blocks per stage."""
    return ResNet(2, input_shape, num_classes, cfg.norm, cfg.groups)


def resnet10_imagenet(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Return the ImageNet ResNet-10 (7x7 stem, max-pool, widths 64-512): one basic block per stage."""
    return ResNet(1, input_shape, num_classes, cfg.norm, cfg.groups, stem="imagenet")


def resnet18_imagenet(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Return the ImageNet ResNet-18 (7x7 stem, max-pool, widths 64-512): two basic blocks per stage."""
    return ResNet(2, input_shape, num_classes, cfg.norm, cfg.groups, stem="imagenet")


Builder = Callable[[ModelConfig, tuple[int, ...], int], nn.Module]

# One line per architecture; a new one also joins ModelConfig.arch's choices (the config lists them for the launch form).
MODELS: Registry[Builder] = Registry(
    "model",
    {
        "mlp": "lmc_core.models:mlp",
        "convnet": "lmc_core.models:convnet",
        "resnet10": "lmc_core.models:resnet10",
        "resnet18": "lmc_core.models:resnet18",
        "resnet10_imagenet": "lmc_core.models:resnet10_imagenet",
        "resnet18_imagenet": "lmc_core.models:resnet18_imagenet",
    },
)


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int, seed: int) -> nn.Module:
    """Return a freshly initialised CPU model; same (cfg, shapes, seed) => bit-identical parameters, global RNG untouched."""
    input_shape = tuple(int(s) for s in input_shape)
    if not 1 <= len(input_shape) <= 3 or any(s < 1 for s in input_shape):
        raise ValueError(f"input_shape must be (F,), (C, L) or (C, H, W) with positive sizes, got {input_shape}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    if cfg.arch not in MODELS:
        raise ValueError(f"unknown arch {cfg.arch!r}; expected one of {', '.join(MODELS.names())}")
    builder = MODELS.get(cfg.arch)

    # fork_rng(devices=[]) saves/restores only the CPU generator; seeding the CPU generator directly
    # (not torch.manual_seed) leaves any CUDA generators alone too. The device context pins the
    # factory device so a caller's torch.set_default_device cannot change where (or how) we build.
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.default_generator.manual_seed(int(seed))
        return builder(cfg, input_shape, num_classes)


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Return {"total": all trainable-parameter elements, "prunable": Conv1d/Conv2d/Linear weight elements}."""
    total = sum(p.numel() for p in model.parameters())
    prunable = sum(m.weight.numel() for _, m in prunable_modules(model))
    return {"total": total, "prunable": prunable}


def describe_model(model: nn.Module) -> dict[str, Any]:
    """Return a JSON-able summary: class name, parameter counts and each prunable layer's name, type and weight shape."""
    return {
        "class": type(model).__name__,
        "parameters": count_parameters(model),
        "prunable_layers": [
            {"name": name, "type": type(m).__name__, "shape": list(m.weight.shape), "numel": m.weight.numel()}
            for name, m in prunable_modules(model)
        ],
    }
