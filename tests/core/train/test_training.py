import math

import pytest
import torch

from lmc_core.data.augment import Augmenter
from lmc_core.data.dataset import load_dataset
from lmc_core.foundations.config import DataConfig, ModelConfig, TrainConfig
from lmc_core.models import build_model
from lmc_core.prune.magnitude import dense_masks, magnitude_prune
from lmc_core.train.copies import train_copies
from lmc_core.train.loop import TrainingDiverged, lr_at, steps_per_epoch, total_steps, train

DATA = DataConfig(name="teacher")
CFG = TrainConfig(lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=50, epochs=2, schedule="cosine")


@pytest.fixture(scope="module")
def data():
    return load_dataset(DATA)


def fresh(data, seed=0):
    return build_model(ModelConfig(arch="mlp", hidden=[32]), data.input_shape, data.num_classes, seed)


def run(data, data_seed=1, augment_seed=1, cfg=CFG, **kw):
    model = fresh(data)
    res = train(model, data, cfg, Augmenter(DATA, data.kind), data_seed=data_seed, augment_seed=augment_seed, **kw)
    return model, res


def test_same_seeds_give_bit_identical_weights(data):
    _, a = run(data)
    _, b = run(data)
    assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)


def test_different_data_order_gives_different_weights(data):
    _, a = run(data, data_seed=1)
    _, b = run(data, data_seed=2)
    assert any(not torch.equal(a.state[k], b.state[k]) for k in a.state)


def test_training_reduces_the_loss(data):
    _, res = run(data, cfg=CFG.model_copy(update={"epochs": 5}))
    assert res.history[-1]["train_loss"] < 0.7 * res.history[0]["train_loss"]


def test_examples_counter_is_exact_for_a_known_schedule(data):
    spe = steps_per_epoch(CFG, len(data.x_train))
    assert spe == 2000 // 50
    _, res = run(data)
    assert res.examples == 2 * spe * 50
    _, child = run(data, start_step=30)  # a child spawned at step 30 pays only for its own steps
    assert child.examples == (2 * spe - 30) * 50
    assert len(res.history) == 2 and res.history[-1]["step"] == 2 * spe


def test_pruned_weights_stay_exactly_zero_with_momentum_and_weight_decay(data):
    model = fresh(data)
    g = torch.Generator().manual_seed(0)
    noisy = {k: torch.randn(v.shape, generator=g) for k, v in model.state_dict().items()}
    masks = magnitude_prune(noisy, dense_masks(model), 0.59)
    model, _ = run(data, masks=masks)
    params = dict(model.named_parameters())
    for name, m in masks.items():
        assert (params[name][~m] == 0).all()
        assert (params[name][m] != 0).all()


def test_schedules():
    cos = TrainConfig(lr=0.1, schedule="cosine", epochs=1)
    assert lr_at(cos, 0, 100, 10) == pytest.approx(0.1)
    assert lr_at(cos, 50, 100, 10) == pytest.approx(0.05)
    assert lr_at(cos, 99, 100, 10) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 0.99)))
    multi = TrainConfig(lr=0.1, schedule="multistep", milestones=[2, 3], gamma=0.2, epochs=4)
    assert [round(lr_at(multi, s, 40, 10), 6) for s in (0, 19, 20, 29, 30, 39)] == [0.1, 0.1, 0.02, 0.02, 0.004, 0.004]
    warm = TrainConfig(lr=0.1, schedule="constant", warmup_steps=4, epochs=1)
    assert [lr_at(warm, s, 100, 10) for s in range(5)] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1])


def test_steps_override_epochs(data):
    cfg = CFG.model_copy(update={"steps": 7})
    assert total_steps(cfg, len(data.x_train)) == 7
    _, res = run(data, cfg=cfg)
    assert res.end_step == 7 and res.examples == 7 * 50


def test_divergence_names_the_step_and_keeps_nothing_half_done(data):
    cfg = CFG.model_copy(update={"lr": 1e12, "momentum": 0.0})
    with pytest.raises(TrainingDiverged) as info:
        run(data, cfg=cfg)
    err = info.value
    assert err.step >= 0 and not math.isfinite(err.loss)
    assert f"step {err.step}" in str(err) and "lower train.lr" in str(err)


def test_batch_larger_than_data_is_a_clear_error_only_when_drop_last_drops_everything(data):
    with pytest.raises(ValueError, match=r"batch_size .* drop_last"):
        run(data, cfg=CFG.model_copy(update={"batch_size": 10_000, "drop_last": True}))
    _, res = run(data, cfg=CFG.model_copy(update={"batch_size": 10_000, "epochs": 1}))  # one full-batch step
    assert res.end_step == 1 and res.examples == len(data.x_train)


def test_every_example_is_seen_every_epoch_with_a_partial_last_batch(data):
    """The authors' loader keeps the last partial batch: 2000 examples in batches of 64 are 31 x 64 + 1 x 16 per epoch."""
    n = len(data.x_train)
    cfg = CFG.model_copy(update={"batch_size": 64, "epochs": 3})
    assert steps_per_epoch(cfg, n) == 32 and total_steps(cfg, n) == 96
    seen: list[torch.Tensor] = []
    model = fresh(data)
    original = model.forward
    model.forward = lambda x: (seen.append(x.detach().clone()), original(x))[1]
    res = train(model, data, cfg, Augmenter(DATA, data.kind), data_seed=3, augment_seed=3)
    assert [len(x) for x in seen[:32]] == [64] * 31 + [16]
    assert res.examples == 3 * n == sum(len(x) for x in seen)
    for epoch in range(3):  # each epoch is a permutation of the whole split: every row exactly once
        rows = torch.cat(seen[32 * epoch : 32 * (epoch + 1)])
        assert torch.equal(rows.sort(dim=0).values, data.x_train.sort(dim=0).values)
    dropped = CFG.model_copy(update={"batch_size": 64, "epochs": 3, "drop_last": True})
    assert steps_per_epoch(dropped, n) == 31
    _, res = run(data, cfg=dropped)
    assert res.examples == 3 * 31 * 64  # 48 examples never seen per epoch


def test_adam_and_nesterov_train(data):
    for cfg in (CFG.model_copy(update={"optimizer": "adam", "lr": 1e-3}), CFG.model_copy(update={"nesterov": True})):
        _, res = run(data, cfg=cfg)
        assert math.isfinite(res.history[-1]["train_loss"])


def test_copies_share_init_and_differ_only_in_noise(data):
    model = fresh(data)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a, b, a2 = train_copies(model, data, CFG, Augmenter(DATA, data.kind), seeds=[(1, 1), (2, 2), (1, 1)])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "the template is not trained"
    assert all(torch.equal(a.state[k], a2.state[k]) for k in a.state)
    assert any(not torch.equal(a.state[k], b.state[k]) for k in a.state)
    _, solo = run(data)
    assert all(torch.equal(a.state[k], solo.state[k]) for k in a.state), "a copy equals a plain training run"


def test_augmentation_seed_is_independent_of_data_order():
    shift = DataConfig(name="mnist1d", augmentation="shift", train_size=500)
    data = load_dataset(shift)
    cfg = TrainConfig(lr=0.05, batch_size=50, epochs=1)
    aug = Augmenter(shift, data.kind)

    def go(ds, as_):
        m = build_model(ModelConfig(arch="mlp", hidden=[16]), data.input_shape, data.num_classes, 0)
        return train(m, data, cfg, aug, data_seed=ds, augment_seed=as_).state

    base, other_aug = go(1, 1), go(1, 2)
    assert any(not torch.equal(base[k], other_aug[k]) for k in base)
