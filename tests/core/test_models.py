"""Tests of lmc_core.models: exact parameter counts, shapes, determinism, module order and torch.func compatibility."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from lmc_core.foundations.config import ModelConfig
from lmc_core.models import build_model, count_parameters, describe_model, prunable_modules
from lmc_core.prune.magnitude import dense_masks, eligible_names, magnitude_prune, prunable_names

MNIST1D = (1, 40)
CIFAR = (3, 32, 32)
IMAGENET = (3, 224, 224)

# Reference settings named in the paper / calibration notes.
MLP_CFG = ModelConfig(arch="mlp", hidden=[100, 100])
CONV1D_CFG = ModelConfig(arch="convnet", width=64, kernel_size=5, stride=2, depth=3, norm="none", pooling="none")
IDC_CFG = ModelConfig(arch="convnet", width=128, kernel_size=3, stride=1, depth=3, norm="instance", pooling="avg")

# One small config per architecture for the behaviour tests (arch, cfg, input shape).
CASES = [
    ("mlp-1d", MLP_CFG, MNIST1D),
    ("mlp-2d", ModelConfig(arch="mlp", hidden=[16]), (3, 8, 8)),
    ("conv1d", CONV1D_CFG, MNIST1D),
    ("conv1d-batch-max", ModelConfig(arch="convnet", width=8, depth=2, norm="batch", pooling="max"), MNIST1D),
    ("conv2d-instance-avg", ModelConfig(arch="convnet", width=8, depth=2, norm="instance", pooling="avg"), (3, 8, 8)),
    ("conv2d-group", ModelConfig(arch="convnet", width=8, depth=2, norm="group", groups=4), (3, 8, 8)),
    ("resnet10-batch", ModelConfig(arch="resnet10", norm="batch"), (3, 8, 8)),
    ("resnet18-none", ModelConfig(arch="resnet18", norm="none"), (3, 8, 8)),
    ("resnet10-group", ModelConfig(arch="resnet10", norm="group", groups=8), (1, 8, 8)),
    ("resnet10-imagenet-batch", ModelConfig(arch="resnet10_imagenet", norm="batch"), (3, 16, 16)),
]
CASE_IDS = [c[0] for c in CASES]


def _resnet_conv_weights(blocks: int, c_in: int = 3) -> int:
    """Hand count of the half-width ResNet's conv weights (3x3 convs, 1x1 shortcuts where the width changes)."""
    widths = [32, 64, 128, 256]
    total = 9 * c_in * 32  # stem
    prev = 32
    for w in widths:
        total += 9 * prev * w + 9 * w * w  # first block: conv1 (maybe strided) + conv2
        if prev != w:
            total += prev * w  # 1x1 shortcut
        total += (blocks - 1) * 2 * 9 * w * w  # the remaining identity blocks
        prev = w
    return total


def _imagenet_resnet_conv_weights(blocks: int, c_in: int = 3) -> int:
    """Hand count of the ImageNet ResNet's conv weights: a 7x7 stem, then 3x3 convs and 1x1 shortcuts at widths 64-512."""
    total = 7 * 7 * c_in * 64
    prev = 64
    for w in (64, 128, 256, 512):
        total += 9 * prev * w + 9 * w * w + (prev * w if prev != w else 0) + (blocks - 1) * 2 * 9 * w * w
        prev = w
    return total


# ----------------------------------------------------------------------------- parameter counts


def test_mlp_parameter_count_mnist1d():
    model = build_model(MLP_CFG, MNIST1D, 10, seed=0)
    # 40-100-100-10 with biases
    assert count_parameters(model) == {
        "total": 40 * 100 + 100 + 100 * 100 + 100 + 100 * 10 + 10,
        "prunable": 40 * 100 + 100 * 100 + 100 * 10,
    }
    assert count_parameters(model)["total"] == 15_210


def test_mnist1d_convnet_parameter_count():
    model = build_model(CONV1D_CFG, MNIST1D, 10, seed=0)
    # lengths 40 -> 20 -> 10 -> 5, flatten 64 * 5 = 320
    assert model.classifier.in_features == 320
    expected = (1 * 64 * 5 + 64) + 2 * (64 * 64 * 5 + 64) + (320 * 10 + 10)
    assert expected == 44_682
    assert count_parameters(model)["total"] == expected
    assert count_parameters(model)["prunable"] == 1 * 64 * 5 + 2 * 64 * 64 * 5 + 320 * 10


@pytest.mark.parametrize("classes, prunable", [(10, 318_848), (100, 503_168)])
def test_idc_convnet3_prunable_count(classes, prunable):
    model = build_model(IDC_CFG, CIFAR, classes, seed=0)
    assert model.classifier.in_features == 128 * 4 * 4
    assert count_parameters(model)["prunable"] == prunable
    # + conv biases and GroupNorm affine (3 layers x 128 x 3) + classifier bias
    assert count_parameters(model)["total"] == prunable + 3 * 3 * 128 + classes
    assert all(m.num_groups == 128 for m in model.modules() if isinstance(m, nn.GroupNorm))


@pytest.mark.parametrize("arch, blocks, paper", [("resnet10", 1, 1.22e6), ("resnet18", 2, 2.79e6)])
def test_resnet_prunable_count(arch, blocks, paper):
    model = build_model(ModelConfig(arch=arch, norm="batch"), CIFAR, 10, seed=0)
    conv = _resnet_conv_weights(blocks)
    assert conv == {"resnet10": 1_223_520, "resnet18": 2_790_240}[arch]
    assert abs(conv - paper) / paper < 0.005  # the paper's rounded figures
    assert count_parameters(model)["prunable"] == conv + 256 * 10
    # BatchNorm affine: 2 per channel of every conv output; fc bias 10
    bn = sum(2 * m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert count_parameters(model)["total"] == conv + 256 * 10 + 10 + bn
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("arch, blocks, paper", [("resnet10_imagenet", 1, 4.90e6), ("resnet18_imagenet", 2, 11.17e6)])
def test_imagenet_resnet_prunable_count(arch, blocks, paper):
    model = build_model(ModelConfig(arch=arch, norm="batch"), IMAGENET, 10, seed=0)
    conv = _imagenet_resnet_conv_weights(blocks)
    # ResNet-18's is torchvision's resnet18 without its 512 x 1000 classifier (11,689,512 - 513,000 - 9,600 BN affine)
    assert conv == {"resnet10_imagenet": 4_900_032, "resnet18_imagenet": 11_166_912}[arch]
    assert abs(conv - paper) / paper < 0.001  # the paper's rounded figures
    assert count_parameters(model)["prunable"] == conv + 512 * 10
    bn = sum(2 * m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert bn == 2 * (64 + 2 * blocks * (64 + 128 + 256 + 512) + 128 + 256 + 512)  # stem, two per block, three shortcuts
    assert count_parameters(model)["total"] == conv + 512 * 10 + 10 + bn


def test_imagenet_resnet_stem_and_feature_map_sizes():
    """224 -> 112 (7x7 stride-2 stem) -> 56 (max-pool) -> 56, 28, 14, 7 by stage; a 32x32 input ends at 1x1."""
    model = build_model(ModelConfig(arch="resnet10_imagenet", norm="batch"), IMAGENET, 10, seed=0).eval()
    assert (model.stem.kernel_size, model.stem.stride, model.stem.padding) == ((7, 7), (2, 2), (3, 3))
    sizes: list[tuple[int, ...]] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: sizes.append(tuple(out.shape[1:]))) for m in model.stages]
    with torch.no_grad():
        assert model(torch.randn(1, *IMAGENET)).shape == (1, 10)
        assert sizes == [(64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)]
        sizes.clear()
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
        assert sizes == [(64, 8, 8), (128, 4, 4), (256, 2, 2), (512, 1, 1)]
    for h in hooks:
        h.remove()
    # The CIFAR ResNet keeps its 3x3 stride-1 stem and no max-pool: a 32x32 input reaches the last stage at 4x4.
    cifar = build_model(ModelConfig(arch="resnet10", norm="batch"), CIFAR, 10, seed=0).eval()
    assert cifar.stem_pool is None and cifar.stem.stride == (1, 1)
    out: list[torch.Size] = []
    cifar.stages[3].register_forward_hook(lambda _m, _i, o: out.append(o.shape))
    with torch.no_grad():
        cifar(torch.randn(1, *CIFAR))
    assert out == [torch.Size([1, 256, 4, 4])]


def test_imagenet_resnet_eval_mode_is_per_example_and_repeatable():
    model = build_model(ModelConfig(arch="resnet10_imagenet", norm="batch"), (3, 64, 64), 10, seed=0)
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        train_alone, train_batch = model(x[:1]), model(x)[:1]
        model.eval()
        alone, batch, again = model(x[:1]), model(x)[:1], model(x)[:1]
    # Train mode normalises with the batch's statistics, so an example's output depends on its batch-mates;
    # eval mode uses the running statistics, so it must not, and two passes are bit-identical.
    assert not torch.allclose(train_alone, train_batch)
    torch.testing.assert_close(alone, batch, rtol=1e-5, atol=1e-6)
    assert torch.equal(batch, again)


def test_imagenet_resnet_prunes_every_conv_and_the_classifier():
    model = build_model(ModelConfig(arch="resnet18_imagenet", norm="batch"), IMAGENET, 10, seed=0)
    names = prunable_names(model)
    assert names[0] == "stem.weight" and names[-1] == "fc.weight"
    assert len(names) == 1 + 4 * 2 * 2 + 3 + 1  # stem, two convs per block, three 1x1 shortcuts, classifier
    assert "stages.1.0.shortcut.0.weight" in names
    state = {k: v.detach() for k, v in model.state_dict().items()}
    masks = magnitude_prune(state, dense_masks(model), 0.2, eligible=eligible_names(names))
    total = _imagenet_resnet_conv_weights(2) + 512 * 10
    assert sum(int(m.sum()) for m in masks.values()) == round(0.8 * total)


def test_resnet_no_norm_has_no_norm_parameters():
    model = build_model(ModelConfig(arch="resnet18", norm="none"), CIFAR, 10, seed=0)
    assert count_parameters(model)["total"] == _resnet_conv_weights(2) + 256 * 10 + 10
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in model.modules())


def test_resnet_init():
    model = build_model(ModelConfig(arch="resnet18", norm="batch"), CIFAR, 10, seed=0)
    w = model.stages[3][1].conv2.weight  # 256 x 256 x 3 x 3: enough samples for a tight std check
    assert abs(w.std().item() - (2 / (9 * 256)) ** 0.5) / (2 / (9 * 256)) ** 0.5 < 0.02
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


def test_describe_model_is_json():
    model = build_model(CONV1D_CFG, MNIST1D, 10, seed=0)
    d = describe_model(model)
    json.dumps(d)
    assert d["class"] == "ConvNet"
    assert d["parameters"] == count_parameters(model)
    assert [layer["shape"] for layer in d["prunable_layers"]] == [[64, 1, 5], [64, 64, 5], [64, 64, 5], [10, 320]]
    assert sum(layer["numel"] for layer in d["prunable_layers"]) == d["parameters"]["prunable"]


# ----------------------------------------------------------------------------- shapes and module order


@pytest.mark.parametrize("name, cfg, shape", CASES, ids=CASE_IDS)
def test_forward_shape(name, cfg, shape):
    model = build_model(cfg, shape, 7, seed=1)
    out = model(torch.randn(2, *shape))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name, cfg, shape", CASES, ids=CASE_IDS)
def test_first_and_last_prunable_modules(name, cfg, shape):
    model = build_model(cfg, shape, 7, seed=1)
    layers = [m for _, m in prunable_modules(model)]
    first, last = layers[0], layers[-1]
    assert isinstance(last, nn.Linear) and last.out_features == 7
    assert all(isinstance(m, (nn.Conv1d, nn.Conv2d)) or m is last or cfg.arch == "mlp" for m in layers)
    if cfg.arch == "mlp":
        assert isinstance(first, nn.Linear) and first.in_features == torch.Size(shape).numel()
    elif cfg.arch == "convnet":
        assert first is model.features[0] and first.in_channels == shape[0]
        assert last is model.classifier
    else:
        assert first is model.stem and last is model.fc


def test_convnet_1d_uses_conv1d_and_2d_uses_conv2d():
    m1 = build_model(ModelConfig(arch="convnet"), MNIST1D, 10, seed=0)
    m2 = build_model(ModelConfig(arch="convnet"), (3, 8, 8), 10, seed=0)
    assert {type(m) for _, m in prunable_modules(m1)} == {nn.Conv1d, nn.Linear}
    assert {type(m) for _, m in prunable_modules(m2)} == {nn.Conv2d, nn.Linear}


# ----------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("name, cfg, shape", CASES, ids=CASE_IDS)
def test_same_seed_bit_identical_and_rng_untouched(name, cfg, shape):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = build_model(cfg, shape, 5, seed=42)
    assert torch.equal(torch.get_rng_state(), before)
    torch.rand(17)  # a different global RNG state must not matter
    b = build_model(cfg, shape, 5, seed=42)
    c = build_model(cfg, shape, 5, seed=43)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())


def test_batchnorm_stats_untouched_by_dry_forward():
    model = build_model(ModelConfig(arch="convnet", width=8, norm="batch"), MNIST1D, 10, seed=0)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    assert bns and all(int(m.num_batches_tracked) == 0 and torch.all(m.running_var == 1) for m in bns)
    assert model.training and all(m.training for m in model.modules())


# ----------------------------------------------------------------------------- torch.func, deepcopy, double backward


@pytest.mark.parametrize(
    "cfg, shape", [(MLP_CFG, MNIST1D), (CONV1D_CFG, MNIST1D), (ModelConfig(arch="convnet", width=8, depth=2), (3, 8, 8))]
)
def test_vmap_functional_call_matches_loop(cfg, shape):
    models = [build_model(cfg, shape, 10, seed=s) for s in range(3)]
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    x = torch.randn(2, *shape)

    def f(p, b):
        return functional_call(base, (p, b), (x,))

    batched = torch.vmap(f)(params, buffers)
    looped = torch.stack([m(x) for m in models])
    torch.testing.assert_close(batched, looped)


@pytest.mark.parametrize("name, cfg, shape", CASES, ids=CASE_IDS)
def test_deepcopy_and_double_backward(name, cfg, shape):
    model = build_model(cfg, shape, 3, seed=0)
    clone = copy.deepcopy(model)
    x, y = torch.randn(2, *shape), torch.tensor([0, 2])
    torch.testing.assert_close(clone(x), model(x), rtol=0, atol=0)

    # Hessian-vector product: grad with create_graph, then grad of <g, v>.
    params = list(model.parameters())
    loss = nn.functional.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    vs = [torch.randn_like(p) for p in params]
    hv = torch.autograd.grad(sum((g * v).sum() for g, v in zip(grads, vs, strict=True)), params, allow_unused=True)
    assert any(h is not None and h.abs().sum() > 0 for h in hv)


def test_no_inplace_relu():
    for _, cfg, shape in CASES:
        model = build_model(cfg, shape, 3, seed=0)
        assert all(not m.inplace for m in model.modules() if isinstance(m, nn.ReLU))


# ----------------------------------------------------------------------------- errors


def test_convnet_on_vector_input_raises():
    with pytest.raises(ValueError, match="arch='mlp'"):
        build_model(ModelConfig(arch="convnet"), (40,), 10, seed=0)


@pytest.mark.parametrize("arch", ["resnet10", "resnet18", "resnet10_imagenet", "resnet18_imagenet"])
@pytest.mark.parametrize("shape", [MNIST1D, (40,)])
def test_resnet_needs_images(arch, shape):
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        build_model(ModelConfig(arch=arch), shape, 10, seed=0)


def test_group_norm_width_not_divisible_raises():
    with pytest.raises(ValueError, match="divisible"):
        build_model(ModelConfig(arch="convnet", width=10, norm="group", groups=4), MNIST1D, 10, seed=0)
    with pytest.raises(ValueError, match="divisible"):
        build_model(ModelConfig(arch="resnet10", norm="group", groups=3), CIFAR, 10, seed=0)


def test_trunk_too_deep_raises():
    with pytest.raises(ValueError, match="convnet"):
        build_model(ModelConfig(arch="convnet", depth=8, pooling="max"), MNIST1D, 10, seed=0)


def test_bad_input_shape_raises():
    with pytest.raises(ValueError, match="input_shape"):
        build_model(MLP_CFG, (1, 2, 3, 4), 10, seed=0)
