import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmc_core.data.dataset import Dataset, load_dataset
from lmc_core.data.dsa import DSA
from lmc_core.distill import methods
from lmc_core.distill.experts import Trajectories, experts_hash, flat_parameters, train_experts, unflatten
from lmc_core.distill.methods import PUBLISHED, _Matcher, dc_loops, distill, embed, gradient_distance, gradient_match, matched_parameters
from lmc_core.distill.synthetic import init_noise
from lmc_core.foundations.config import DataConfig, DistillConfig, ModelConfig, MTTSettings
from lmc_core.models import build_model
from lmc_core.studies.presets import preset, preset_names

NET = ModelConfig(arch="convnet", depth=2, width=16, kernel_size=3, pooling="avg")
MTT_SMALL = {"experts": 2, "expert_train_epochs": 4, "max_start_epoch": 2, "syn_steps": 10, "expert_epochs": 2, "expert_batch": 128}


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataConfig(name="digits"))


@pytest.fixture(scope="module")
def experts(digits):
    settings = MTTSettings(**MTT_SMALL)
    return train_experts(digits, NET, settings, DSA("none", "image"), seed=0)


def _distill(data, method, experts=None, **kw):
    extra = {"dc": {"outer_loop": 3, "inner_loop": 3}} if method == "dc" else {}
    extra |= {"lr_img": 100.0, "mtt": MTT_SMALL} if method == "mtt" else {}
    cfg = DistillConfig(**({"method": method, "ipc": 2, "init": "noise", "batch_real": 32} | extra | kw))
    return distill(cfg, data, NET, experts=experts)


@pytest.mark.parametrize("method", ["dc", "mtt"])
def test_matching_loss_decreases_over_the_first_iterations(digits, experts, method):
    made = _distill(digits, method, experts[0] if method == "mtt" else None, iterations=16)
    losses = np.array(made.losses)
    assert len(losses) == 16 and np.isfinite(losses).all()
    first, last = losses[:5].mean(), losses[-5:].mean()
    assert last < 0.8 * first, f"{method}: mean loss {first:.3f} over the first 5 iterations, {last:.3f} over the last 5"
    assert made.synthetic.provenance["loss_curve"] == made.losses


def _dm_objective(images, labels, data, probes):
    """DM's loss without augmentation, averaged over fixed probe networks: comparable across image sets."""
    total = 0.0
    for seed in probes:
        net = build_model(NET, data.input_shape, data.num_classes, seed)
        for c in range(data.num_classes):
            real = embed(net, data.x_train[data.y_train == c]).mean(0)
            total += float(((real - embed(net, images[labels == c]).mean(0)) ** 2).sum())
    return total / len(probes)


@torch.no_grad()
def test_distribution_matching_loss_decreases(digits):
    # DM samples a fresh network per iteration, so its per-iteration losses are not comparable;
    # the objective on fixed probe networks is.
    start = init_noise(digits, 2, 1, 0)
    with torch.enable_grad():
        made = _distill(digits, "dm", iterations=10, dsa="none", lr_img=10.0)
    probes = range(100, 105)
    before = _dm_objective(start.images, start.labels, digits, probes)
    after = _dm_objective(made.synthetic.images, made.synthetic.labels, digits, probes)
    assert after < 0.5 * before, f"DM objective {before:.3f} -> {after:.3f}"


def test_distillation_is_seeded(digits):
    a = _distill(digits, "dm", iterations=3, seed=5).synthetic.images
    b = _distill(digits, "dm", iterations=3, seed=5).synthetic.images
    c = _distill(digits, "dm", iterations=3, seed=6).synthetic.images
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_multi_formation_stores_ipc_images_and_trains_on_factor_squared(digits):
    made = _distill(digits, "dc", iterations=2, factor=2, init="real")
    s = made.synthetic
    assert s.images.shape == (2 * 10, 1, 8, 8) and s.factor == 2
    x, y = s.decode()
    assert x.shape == (4 * 2 * 10, 1, 8, 8)
    assert torch.equal(torch.bincount(y), torch.full((10,), 8))
    assert len(s.as_dataset(digits).x_train) == 80


def test_mtt_learns_its_learning_rate_and_counts_the_experts_examples(digits, experts):
    trajectories, expert_examples = experts
    made = _distill(digits, "mtt", trajectories, iterations=3)
    assert made.synthetic.lr is not None and made.synthetic.lr != MTTSettings().lr_teacher
    assert made.real_examples == expert_examples == 2 * 4 * len(digits.x_train)  # every example every epoch (last batch partial)


def test_dm_counts_the_real_examples_it_embeds(digits):
    made = _distill(digits, "dm", iterations=3, batch_real=16)
    assert made.real_examples == 3 * 10 * 16


def test_expert_trajectories_round_trip_through_storage(tmp_path, digits, experts):
    trajectories, _ = experts
    assert trajectories.params.shape[:2] == (2, 5)
    init = build_model(NET, digits.input_shape, digits.num_classes, seed=0)
    # Expert 0 starts from its own seeded init, stored as epoch 0.
    assert trajectories.params[0, 0].shape == flat_parameters(init).shape
    assert not torch.equal(trajectories.params[0, 0], trajectories.params[0, 4]), "experts must move"
    trajectories.save(tmp_path / "e")
    again = Trajectories.load(tmp_path / "e")
    assert torch.equal(again.params, trajectories.params)
    assert again.names == trajectories.names and again.shapes == trajectories.shapes
    assert again.info["examples"] == trajectories.info["examples"]


def test_unflatten_views_parameters_in_order(digits):
    model = build_model(NET, digits.input_shape, digits.num_classes, seed=3)
    flat = flat_parameters(model)
    named = unflatten(flat, [n for n, _ in model.named_parameters()], [tuple(p.shape) for p in model.parameters()])
    for name, p in model.named_parameters():
        assert torch.equal(named[name], p.detach())
    with pytest.raises(ValueError, match="entries"):
        unflatten(flat[:-1], list(named), [tuple(v.shape) for v in named.values()])


def test_experts_hash_changes_with_what_changes_experts():
    base = experts_hash(DataConfig(name="digits"), NET, MTTSettings(), "auto", 0)
    assert base == experts_hash(DataConfig(name="digits"), NET, MTTSettings(syn_steps=50, lr_lr=1e-3), "auto", 0), (
        "student settings do not change experts"
    )
    assert base != experts_hash(DataConfig(name="digits"), NET, MTTSettings(experts=6), "auto", 0)
    assert base != experts_hash(DataConfig(name="mnist1d"), NET, MTTSettings(), "auto", 0)


def test_mtt_refuses_experts_of_another_network(digits, experts):
    other = ModelConfig(arch="mlp", hidden=[8])
    cfg = DistillConfig(method="mtt", ipc=1, iterations=1, mtt=MTT_SMALL)
    with pytest.raises(ValueError, match="different network"):
        distill(cfg, digits, other, experts=experts[0])


def test_batchnorm_distillation_networks_are_refused(digits):
    with pytest.raises(ValueError, match="instance"):
        distill(DistillConfig(method="dm", ipc=1, iterations=1), digits, ModelConfig(arch="convnet", depth=1, width=8, norm="batch"))


def test_embed_returns_the_classifier_input(digits):
    model = build_model(NET, digits.input_shape, digits.num_classes, seed=0)
    x = digits.x_train[:5]
    assert torch.allclose(model.classifier(embed(model, x)), model(x))


def test_gradient_distance_is_zero_for_equal_gradients_and_cosine_ignores_biases():
    w, b = torch.randn(4, 3), torch.randn(4)
    assert float(gradient_distance([w, b], [w, b], "cos")) == pytest.approx(0.0, abs=1e-6)
    assert float(gradient_distance([w, b], [2 * w, -b], "cos")) == pytest.approx(0.0, abs=1e-6), "cosine: scale-free, biases ignored"
    assert float(gradient_distance([w, b], [-w, b], "cos")) == pytest.approx(8.0, abs=1e-5), "opposite rows: 1 - (-1) per row"
    assert float(gradient_distance([w, b], [w, b + 1], "mse")) == pytest.approx(4.0)


def test_dc_loops_follow_the_published_table():
    assert dc_loops(1) == (1, 1) and dc_loops(10) == (10, 50) and dc_loops(50) == (50, 10) and dc_loops(12) == (10, 50)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_distillation_on_cuda_matches_cpu(digits, experts):
    for method, exp in (("dm", None), ("dc", None), ("mtt", experts[0])):
        cpu = _distill(digits, method, exp, iterations=2)
        gpu = _distill(digits.to("cuda"), method, exp, iterations=2)
        assert gpu.synthetic.images.device.type == "cpu", "results are stored from the CPU"
        # Same draws (CPU generators) on both devices: the first loss agrees up to float rounding.
        assert gpu.losses[0] == pytest.approx(cpu.losses[0], rel=1e-3), method
    # IDC's objective and network schedule: CutMix and augmentation draws come from the CPU stream too, so the
    # second iteration (after two trained matches) still agrees, and both count the same real examples
    idc = {"outer_loop": 3, "inner_loop": 2, "layers": "conv", "match": "mse", "net_data": "real", "net_batch": 8}
    idc |= {"net_momentum": 0.9, "net_weight_decay": 5e-4, "net_cutmix": 0.5, "net_dsa": "idc:color_crop"}
    kw = {"iterations": 2, "dsa": "idc:color_crop_cutout", "dc": idc}
    cpu, gpu = _distill(digits, "dc", **kw), _distill(digits.to("cuda"), "dc", **kw)
    assert gpu.losses == pytest.approx(cpu.losses, rel=1e-2) and gpu.real_examples == cpu.real_examples


# ---------------------------------------------------------------------------------------------
# The objectives against hand arithmetic: these would fail if a distance or the MTT loss were wrong.


def test_dc_cosine_distance_is_summed_per_output_row_and_skips_biases_as_the_reference():
    # DC's distance_wb (VICO-UoE/DatasetCondensation utils.py, dis_metric='ours'): a 2-D (out, in) gradient is
    # compared row by row, sum_rows 1 - <s_i, r_i> / (|s_i| |r_i|); a conv gradient (out, in, h, w) is first
    # reshaped to (out, in*h*w); a 1-D gradient (bias, norm) contributes 0.
    syn_w = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    real_w = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    # row 0: orthogonal -> 1; row 1: <.,.> = 2, norms sqrt(2) sqrt(3) -> 1 - 2 / sqrt(6)
    by_hand = 1.0 + (1.0 - 2.0 / 6**0.5)
    syn_b, real_b = torch.tensor([1.0, 2.0]), torch.tensor([3.0, -1.0])
    got = float(gradient_distance([syn_w, syn_b], [real_w, real_b], "cos"))
    assert got == pytest.approx(by_hand, rel=1e-6)
    # not the cosine of the flattened matrices (1 - 2 / (sqrt(3) * 2) = 0.42), which a whole-tensor distance would give
    assert got != pytest.approx(1 - 2 / (3**0.5 * 2), abs=1e-3)
    # a conv gradient (out=2, in=1, 1x3 kernel) is the same rows
    conv = float(gradient_distance([syn_w.view(2, 1, 1, 3)], [real_w.view(2, 1, 1, 3)], "cos"))
    assert conv == pytest.approx(by_hand, rel=1e-6)
    # the reference's denominator is |s||r| + 1e-6; at these magnitudes that is within 1e-6 of the value above
    ref = sum(1 - float(s @ r) / (float(s.norm() * r.norm()) + 1e-6) for s, r in zip(syn_w, real_w, strict=True))
    assert got == pytest.approx(ref, abs=1e-5)


def test_idc_mse_distance_is_the_plain_squared_error_summed_over_the_tensors_given():
    # IDC's dist(method='mse') (condense.py): (x - y).pow(2).sum() per tensor, added over tensors; no per-row split, no
    # normalisation. Two conv-shaped gradients (out=2, in=1, 1x3) and (out=1, in=2, 1x1):
    syn = [torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]).view(2, 1, 1, 3), torch.tensor([0.5, -1.0]).view(1, 2, 1, 1)]
    real = [torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0]]).view(2, 1, 1, 3), torch.tensor([2.5, 1.0]).view(1, 2, 1, 1)]
    # first: 1 + 1 + 1 = 3; second: (-2)^2 + (-2)^2 = 8
    assert float(gradient_distance(syn, real, "mse")) == pytest.approx(11.0)
    assert float(gradient_distance(syn[:1], real[:1], "mse")) == pytest.approx(3.0)


# A ConvNet small enough to list by hand: features = [conv, norm, ReLU, pool] x 2, then the linear classifier.
SMALL = ModelConfig(arch="convnet", depth=2, width=4, kernel_size=3, pooling="avg", norm="instance")
SMALL_CONV_WEIGHTS = ["features.0.weight", "features.4.weight"]


def _per_parameter_gradients(net, x, c, create_graph=False):
    loss = torch.nn.functional.cross_entropy(net(x), torch.full((len(x),), c))
    names = [n for n, _ in net.named_parameters()]
    return dict(zip(names, torch.autograd.grad(loss, list(net.parameters()), create_graph=create_graph), strict=True))


def test_idc_layers_match_the_conv_weights_only_and_dc_layers_every_parameter(digits):
    # IDC's matchloss skips 1-D gradients (biases, norm) unless --bias and 2-D ones (the classifier) unless --fc; both
    # default to False, so only the conv weights enter. DC matches every parameter.
    net = build_model(SMALL, digits.input_shape, digits.num_classes, seed=0)
    named = dict(net.named_parameters())
    assert sorted(named) == sorted(
        [f"features.{i}.{p}" for i in (0, 1, 4, 5) for p in ("weight", "bias")] + ["classifier.weight", "classifier.bias"]
    )
    assert [id(p) for p in matched_parameters(net, "conv")] == [id(named[n]) for n in SMALL_CONV_WEIGHTS]
    assert [id(p) for p in matched_parameters(net, "all")] == [id(p) for p in net.parameters()]

    c = 3
    real = digits.x_train[digits.y_train == c][:16]
    fake = digits.x_train[digits.y_train == c][16:20].clone().requires_grad_(True)
    g_real = _per_parameter_gradients(net, real, c)
    g_syn = _per_parameter_gradients(net, fake, c, create_graph=True)
    sq = {n: ((g_syn[n] - g_real[n]) ** 2).sum() for n in named}
    value = lambda t: float(t.detach())  # noqa: E731
    by_hand_conv = sq[SMALL_CONV_WEIGHTS[0]] + sq[SMALL_CONV_WEIGHTS[1]]
    by_hand_all = sum(sq.values())
    assert value(sq["classifier.weight"]) > 0.01 * value(by_hand_conv), "the classifier must carry enough to tell the two apart"

    conv = gradient_match(net, matched_parameters(net, "conv"), real, fake, c, "mse")
    assert value(conv) == pytest.approx(value(by_hand_conv), rel=1e-5)
    assert value(gradient_match(net, matched_parameters(net, "all"), real, fake, c, "mse")) == pytest.approx(value(by_hand_all), rel=1e-5)
    assert value(conv) < value(by_hand_all) * (1 - 1e-3)
    # the images move by the conv weights' match alone: its gradient w.r.t. the synthetic pixels is the hand objective's
    (want,) = torch.autograd.grad(by_hand_conv, fake, retain_graph=True)
    (got,) = torch.autograd.grad(conv, fake)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-8)
    (all_params,) = torch.autograd.grad(by_hand_all, fake)
    assert not torch.allclose(got, all_params, rtol=1e-3, atol=1e-8)


def test_conv_layers_need_a_convolution(digits):
    mlp = build_model(ModelConfig(arch="mlp", hidden=[8]), digits.input_shape, digits.num_classes, seed=0)
    with pytest.raises(ValueError, match=r"dc\.layers='all'"):
        matched_parameters(mlp, "conv")


def _recorded_batches(matcher):
    """Wrap matcher.network_batch so every batch the network trains on is kept."""
    seen, draw = [], matcher.network_batch

    def record():
        x, y = draw()
        seen.append((x.clone(), y.clone()))
        return x, y

    matcher.network_batch = record
    return seen


def test_idc_network_schedule_is_sgd_with_momentum_and_weight_decay_on_net_batch_real_examples():
    data, net_cfg = _linear_task()
    lr, mu, wd, steps = 0.5, 0.9, 0.01, 3
    cfg = DistillConfig(
        method="dc",
        ipc=1,
        dsa="none",
        batch_real=3,
        dc={"net_data": "real", "net_batch": 2, "lr_net": lr, "net_momentum": mu, "net_weight_decay": wd},
    )
    images, labels = torch.zeros(2, 3, requires_grad=True), torch.tensor([0, 1])
    matcher = _Matcher(cfg, data, net_cfg, images, labels)
    net = matcher.network(0)
    w0, b0 = (p.detach().double().numpy().copy() for p in net.parameters())
    seen = _recorded_batches(matcher)
    matcher._train_network(net, matcher.network_optimizer(net), steps)

    assert len(seen) == steps and all(len(x) == 2 for x, _ in seen), "net_batch examples per step, not batch_real"
    assert all(any(torch.equal(row, r) for r in data.x_train) for x, _ in seen for row in x), "real training examples"
    assert matcher.real_examples == steps * 2
    # torch's SGD, by hand: d = grad + wd * p; v = mu * v + d (v = d at the first step); p -= lr * v
    w, b, vw, vb = w0, b0, None, None
    for x, y in seen:
        dw, db = _softmax_ce_grad(w, b, x.double().numpy(), y.numpy())
        dw, db = dw + wd * w, db + wd * b
        vw, vb = (dw, db) if vw is None else (mu * vw + dw, mu * vb + db)
        w, b = w - lr * vw, b - lr * vb
    got_w, got_b = (p.detach().double().numpy() for p in net.parameters())
    np.testing.assert_allclose(got_w, w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_b, b, rtol=1e-5, atol=1e-6)
    # plain SGD (DC's network optimizer) would land elsewhere after three steps
    plain = w0.copy()
    for x, y in seen:
        plain = plain - lr * _softmax_ce_grad(plain, b0, x.double().numpy(), y.numpy())[0]
    assert not np.allclose(got_w, plain, rtol=1e-3)


def _image_matcher(digits, **dc):
    cfg = DistillConfig(method="dc", ipc=1, dsa="none", dc={"net_data": "real", "net_batch": 8, "lr_net": 0.1, **dc})
    syn = init_noise(digits, 1, 1, 0)
    return _Matcher(cfg, digits, NET, syn.images.clone().requires_grad_(True), syn.labels)


def test_network_steps_use_cutmix_with_its_probability_and_its_loss(digits, monkeypatch):
    calls = []
    real_cutmix = methods.cutmix

    def recording_cutmix(x, y, g):
        calls.append(real_cutmix(x, y, g))
        return calls[-1]

    monkeypatch.setattr(methods, "cutmix", recording_cutmix)
    matcher = _image_matcher(digits, net_cutmix=1.0)
    net = matcher.network(0)
    before = copy.deepcopy(net)
    matcher._train_network(net, matcher.network_optimizer(net), 1)
    assert len(calls) == 1
    x, y_a, y_b, lam = calls[0]
    # IDC's train_epoch: loss = CE(out, y) * ratio + CE(out, y_perm) * (1 - ratio), then one SGD step
    out = before(x)
    loss = lam * F.cross_entropy(out, y_a) + (1 - lam) * F.cross_entropy(out, y_b)
    grads = torch.autograd.grad(loss, list(before.parameters()), retain_graph=True)
    for p, p0, g in zip(net.parameters(), before.parameters(), grads, strict=True):
        assert torch.allclose(p, p0 - 0.1 * g, atol=1e-6)
    unmixed = torch.autograd.grad(F.cross_entropy(out, y_a), list(before.parameters()))
    # (the classifier weight: its bias gradient only sees class counts, which a permutation keeps)
    assert lam < 1 and not torch.allclose(grads[-2], unmixed[-2], atol=1e-6), "the draw for this seed mixes; the loss must show it"

    calls.clear()
    matcher = _image_matcher(digits, net_cutmix=0.5)
    net = matcher.network(0)
    matcher._train_network(net, matcher.network_optimizer(net), 40)
    assert 8 < len(calls) < 32, f"CutMix with p 0.5: {len(calls)} of 40 steps"

    # off (DC): never called, and no draw is spent on it, so the stream of real batches is the one DC had
    calls.clear()
    off, reference = _image_matcher(digits), _image_matcher(digits)
    net = off.network(0)
    off._train_network(net, off.network_optimizer(net), 5)
    assert calls == []
    for _ in range(5):
        reference.network_batch()
    assert torch.equal(off.network_batch()[0], reference.network_batch()[0])


def test_dc_counts_the_real_examples_of_its_matches_and_of_the_network_schedule(digits):
    # per iteration: outer matches x classes x batch_real, and (outer - 1) network updates of inner steps x net_batch
    # (the network is dropped after the last match, so it is not trained after it)
    iterations, outer, inner, batch_real, net_batch = 1, 3, 2, 7, 5
    idc_like = {
        "outer_loop": outer,
        "inner_loop": inner,
        "layers": "conv",
        "match": "mse",
        "net_data": "real",
        "net_batch": net_batch,
        "net_momentum": 0.9,
        "net_weight_decay": 5e-4,
        "net_cutmix": 0.5,
        "net_dsa": "idc:color_crop",
    }
    made = _distill(digits, "dc", iterations=iterations, batch_real=batch_real, dsa="idc:color_crop_cutout", dc=idc_like)
    assert made.real_examples == iterations * (outer * 10 * batch_real + (outer - 1) * inner * net_batch) == 230
    assert made.synthetic.provenance["real_examples"] == 230
    # DC's own schedule trains on the synthetic set: only the matches consume real examples
    made = _distill(digits, "dc", iterations=iterations, batch_real=batch_real, dc={"outer_loop": outer, "inner_loop": inner})
    assert made.real_examples == iterations * outer * 10 * batch_real == 210


@pytest.mark.parametrize("name", [n for n in preset_names() if n.startswith("paper-cifar")])
def test_paper_presets_distil_with_idcs_published_cifar_settings(name):
    idc = PUBLISHED["idc"]
    for d in preset(name).synthetic.sets.values():
        dc = d.dc
        assert (d.method, d.factor, d.iterations, d.batch_real, dc.outer_loop) == ("dc", 2, 2000, 64, idc["matches_per_network"])
        assert (dc.match, dc.layers, dc.net_data, dc.lr_net) == (idc["match"], idc["layers"], "real", idc["net_lr"])
        # IDC's train_epoch stops at the first batch that brings the count to n_data: ceil(2000 / 64) = 32 batches
        assert dc.inner_loop == math.ceil(idc["n_data"] / idc["net_batch"]) == 32 and dc.net_batch == idc["net_batch"]
        assert (dc.net_momentum, dc.net_weight_decay, dc.net_cutmix) == (idc["net_momentum"], idc["net_weight_decay"], idc["net_cutmix"])
        assert (d.dsa, dc.net_dsa) == (idc["dsa"], idc["net_dsa"])
        assert DSA(d.dsa, "image").mode == DSA(dc.net_dsa, "image").mode == "idc"


def _linear_task():
    """Two classes, three features, a linear classifier (MLP without hidden layers): small enough to differentiate by hand."""
    x = torch.tensor([[1.0, 0.0, 2.0], [0.5, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 2.0, -0.5], [1.0, 1.0, 1.0], [2.0, 0.0, -1.0]])
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    data = Dataset("hand", x, y, x.clone(), y.clone(), num_classes=2, kind="vector")
    return data, ModelConfig(arch="mlp", hidden=[])


def _softmax_ce_grad(w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient of the mean cross-entropy of softmax(x w^T + b): G = (p - onehot) / n, dW = G^T x, db = sum G."""
    z = x @ w.T + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    g = (p - np.eye(w.shape[0])[y]) / len(x)
    return g.T @ x, g.sum(0)


def test_mtt_loss_is_the_normalised_distance_after_student_steps_computed_by_hand():
    data, net_cfg = _linear_task()
    lr, steps = 0.7, 2
    cfg = DistillConfig(
        method="mtt",
        ipc=2,
        dsa="none",
        mtt={"experts": 1, "expert_train_epochs": 2, "max_start_epoch": 1, "expert_epochs": 1, "syn_steps": steps, "lr_teacher": lr},
    )
    # the synthetic set: two examples per class, chosen here
    images = torch.tensor([[0.5, 1.0, -1.0], [1.5, 0.0, 0.5], [-0.5, 2.0, 0.0], [0.0, -1.0, 1.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    # expert: epoch t = 0 (the only start MTT can draw here), epoch t + M = 1, and an epoch 2 the student never sees
    start_w, start_b = np.array([[0.2, -0.1, 0.3], [-0.4, 0.5, 0.1]]), np.array([0.05, -0.05])
    target_w, target_b = np.array([[0.6, -0.5, 0.2], [-0.3, 0.9, -0.2]]), np.array([0.1, -0.3])
    flat = lambda w, b: torch.tensor(np.concatenate([w.ravel(), b]), dtype=torch.float32)  # noqa: E731
    net = build_model(net_cfg, data.input_shape, 2, 0)
    experts = Trajectories(
        torch.stack([flat(start_w, start_b), flat(target_w, target_b), flat(10 * target_w, 10 * target_b)])[None],
        [n for n, _ in net.named_parameters()],
        [tuple(p.shape) for p in net.parameters()],
        {},
    )
    matcher = _Matcher(cfg, data, net_cfg, images, labels)
    step = matcher.mtt_step(experts)
    got = step(0, torch.optim.SGD([images], lr=0.0))  # the loss is measured before the (null) pixel update

    # by hand, in float64: N = 2 full-batch SGD steps from the expert's epoch t, then
    # ||w_N - w*_{t+M}||^2 / ||w*_t - w*_{t+M}||^2 (Cazenavette et al. 2022, eq. 2)
    x, yy = images.detach().double().numpy(), labels.numpy()
    w, b = start_w.copy(), start_b.copy()
    for _ in range(steps):
        dw, db = _softmax_ce_grad(w, b, x, yy)
        w, b = w - lr * dw, b - lr * db
    num = ((w - target_w) ** 2).sum() + ((b - target_b) ** 2).sum()
    den = ((start_w - target_w) ** 2).sum() + ((start_b - target_b) ** 2).sum()
    assert got == pytest.approx(num / den, rel=1e-5)
    # and the students' steps matter: zero steps would give exactly 1, one step something else
    one = _softmax_ce_grad(start_w, start_b, x, yy)
    w1, b1 = start_w - lr * one[0], start_b - lr * one[1]
    assert got != pytest.approx((((w1 - target_w) ** 2).sum() + ((b1 - target_b) ** 2).sum()) / den, rel=1e-3)
    assert got != pytest.approx(1.0, rel=1e-3)
