import pytest
import torch
from torch import nn

from lmc_core.prune.magnitude import (
    apply_masks,
    dense_masks,
    eligible_names,
    kept_entries,
    layer_sparsity,
    magnitude_prune,
    prunable_names,
    random_masks_like,
    rewind,
    round_sparsity,
    sparsity,
)


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, 8, 5), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 33), nn.ReLU(), nn.Linear(33, 10))


def random_state(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g) for k, v in model.state_dict().items()}


def test_prunable_names_are_conv_and_linear_weights_in_order():
    assert prunable_names(net()) == ["0.weight", "3.weight", "5.weight"]


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_sparsity_after_k_rounds_is_one_minus_point_eight_to_the_k(scope):
    model = net()
    masks = dense_masks(model)
    n = sum(m.numel() for m in masks.values())
    for r in range(1, 8):
        # each round prunes freshly "retrained" weights, as IMP does
        new = magnitude_prune(random_state(model, r), masks, round_sparsity(0.2, r), scope=scope)
        assert all((~m | o).all() for m, o in zip(new.values(), masks.values(), strict=True)), "masks may only shrink"
        kept = sum(int(m.sum()) for m in new.values())
        if scope == "global":
            assert kept == round(n * 0.8**r)
        else:
            assert all(int(m.sum()) == round(m.numel() * 0.8**r) for m in new.values())
        assert abs(sparsity(new) - (1 - 0.8**r)) <= len(new) / n
        masks = new


def test_global_pruning_removes_the_smallest_magnitudes():
    model = net()
    state = random_state(model, 7)
    masks = magnitude_prune(state, dense_masks(model), 0.5)
    kept = torch.cat([state[k].abs()[m] for k, m in masks.items()])
    gone = torch.cat([state[k].abs()[~m] for k, m in masks.items()])
    assert kept.min() >= gone.max()


def test_previously_pruned_weights_stay_pruned_even_when_large():
    model = net()
    masks = dense_masks(model)
    masks["3.weight"][0, :5] = False
    state = random_state(model, 1)
    state["3.weight"][0, :5] = 1e6  # a huge value behind a mask must not come back
    new = magnitude_prune(state, masks, 0.3)
    assert not new["3.weight"][0, :5].any()


def test_ties_are_broken_deterministically_by_index():
    model = net()
    state = {k: torch.ones_like(v) for k, v in model.state_dict().items()}
    a = magnitude_prune(state, dense_masks(model), 0.2)
    b = magnitude_prune(state, dense_masks(model), 0.2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    flat = torch.cat([a[k].flatten() for k in prunable_names(model)])
    keep = int(flat.sum())
    assert flat[:keep].all() and not flat[keep:].any(), "with all ties, the lowest flat indices are kept"


def test_keep_first_and_last_dense():
    model = net()
    names = prunable_names(model)
    eligible = eligible_names(names, keep_first_dense=True, keep_last_dense=True)
    assert eligible == ["3.weight"]
    masks = magnitude_prune(random_state(model, 2), dense_masks(model), 0.5, eligible=eligible)
    assert masks["0.weight"].all() and masks["5.weight"].all()
    assert layer_sparsity(masks)["3.weight"] == pytest.approx(0.5, abs=1 / masks["3.weight"].numel())
    with pytest.raises(ValueError, match="no layer left"):
        eligible_names(["only.weight"], keep_first_dense=True)


def test_random_masks_match_per_layer_counts_and_depend_on_seed():
    model = net()
    ref = magnitude_prune(random_state(model, 3), dense_masks(model), 0.6)
    a, b, c = random_masks_like(ref, 0), random_masks_like(ref, 0), random_masks_like(ref, 1)
    for k in ref:
        assert int(a[k].sum()) == int(ref[k].sum())
        assert torch.equal(a[k], b[k])
    assert any(not torch.equal(a[k], c[k]) for k in ref)
    assert any(not torch.equal(a[k], ref[k]) for k in ref)


def test_rewind_restores_surviving_weights_and_zeroes_pruned():
    model = net()
    rewind_state = {k: v.clone() for k, v in model.state_dict().items()}
    masks = magnitude_prune(random_state(model, 4), dense_masks(model), 0.36)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # "training" moved every weight
    rewind(model, rewind_state, masks)
    for name, value in model.state_dict().items():
        if name in masks:
            assert torch.equal(value[masks[name]], rewind_state[name][masks[name]])
            assert (value[~masks[name]] == 0).all()
        else:
            assert torch.equal(value, rewind_state[name])


def test_apply_masks_without_masks_is_a_no_op():
    model = net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    apply_masks(model, None)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bad_target_is_refused():
    model = net()
    masks = magnitude_prune(random_state(model, 5), dense_masks(model), 0.5)
    with pytest.raises(ValueError, match="masks only shrink"):
        magnitude_prune(random_state(model, 6), masks, 0.2)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        magnitude_prune(random_state(model, 6), masks, 1.0)


# ---- a weights-only rewind (the authors' code: only conv / linear `weight_orig` goes back to the init) ----


def bn_net() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8, 3))


def test_kept_entries_are_everything_but_the_prunable_weights():
    model = bn_net()
    kept = kept_entries(model.state_dict(), model)
    assert sorted(kept) == [
        "0.bias",
        "1.bias",
        "1.num_batches_tracked",
        "1.running_mean",
        "1.running_var",
        "1.weight",  # a norm's affine scale is a parameter called weight, but not a prunable one
        "4.bias",
    ]


def test_weights_rewind_puts_weights_back_and_keeps_biases_norms_and_running_statistics():
    model = bn_net()
    theta_k = {k: v.clone() for k, v in model.state_dict().items()}
    trained = random_state(model, 8)  # the pruned network: every entry differs from theta_k
    trained["1.running_var"] = trained["1.running_var"].abs()
    trained["1.num_batches_tracked"] = torch.tensor(17)
    masks = magnitude_prune(trained, dense_masks(model), 0.36)
    target = bn_net()
    rewind(target, theta_k, masks, kept_entries(trained, model))
    got = target.state_dict()
    for name in ("0.weight", "4.weight"):  # the prunable weights: theta_k where kept, zero where pruned
        assert torch.equal(got[name], theta_k[name] * masks[name])
    for name in ("0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var", "4.bias"):
        assert torch.equal(got[name], trained[name]), name
        assert not torch.equal(got[name], theta_k[name]), f"{name}: the test needs trained values that differ from theta_k"
    assert int(got["1.num_batches_tracked"]) == 17
    # without kept entries it is the full rewind
    rewind(target, theta_k, masks)
    got = target.state_dict()
    assert all(torch.equal(got[n], theta_k[n] * masks[n] if n in masks else theta_k[n]) for n in theta_k)


def test_kept_entries_that_are_prunable_weights_or_unknown_are_refused():
    model = bn_net()
    state = model.state_dict()
    with pytest.raises(ValueError, match=r"prunable weights.*always rewind"):
        rewind(bn_net(), state, dense_masks(model), {"0.weight": state["0.weight"], "0.bias": state["0.bias"]})
    with pytest.raises(KeyError, match="another model"):
        rewind(bn_net(), state, dense_masks(model), {"9.bias": torch.zeros(3)})
