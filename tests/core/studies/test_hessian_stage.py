"""The Hessian stage in both BatchNorm modes: eval (running statistics, the default) and train (the batch's own
statistics, as the paper took it on one batch), and the diagonal it records with how it was computed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmc_core.foundations.layout import copies_key, hessian_key
from lmc_core.hessian.diagonal import exact_diagonal
from lmc_core.hessian.operator import HessianOperator
from lmc_core.studies.presets import merge
from lmc_core.studies.run import Run
from lmc_core.studies.validation import validate_config

BN_STUDY = {
    "data": {"name": "digits"},
    "model": {"arch": "convnet", "depth": 2, "width": 4, "norm": "batch"},
    "train": {"lr": 0.05, "batch_size": 64, "epochs": 1},
    "pruning": {"mask_sources": ["dense"], "rounds": 0},
    "stability": {"pairs": [[1, 2]], "alphas": 3, "splits": ["test"]},
    "analysis": {"hessian": {"examples": 64, "top_k": 2, "trace_max_hvps": 40, "density_runs": 0, "diagonal": "none"}},
}


@pytest.fixture(autouse=True)
def one_thread():
    # The dense and per-weight references on 2 shared cores: one intra-op thread is several times faster here.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def top_eigenvalues(run: Run, mode: str) -> list[float]:
    """Return the two largest eigenvalues of copy A's Hessian in `mode`, from the dense float64 matrix."""
    model = run.fresh_model()
    model.load_state_dict(run.load_state(copies_key("dense", 0, 0), "a"))
    batch = (run.data.x_train[:64], run.data.y_train[:64])
    dense = HessianOperator(model, [batch], dtype=torch.float64, mode=mode).to_dense()
    return torch.linalg.eigvalsh(dense).flip(0)[:2].tolist()


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_the_stage_takes_the_hessian_in_the_mode_the_config_names(tmp_path, mode):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = Run(validate_config(merge(BN_STUDY, {"analysis": {"hessian": {"mode": mode}}})), tmp_path / "runs")
        run.run()
    finally:
        torch.set_num_threads(threads)
    info = run.stage_info(hessian_key("dense", 0, 0))
    assert info["mode"] == mode and info["examples"] == 64
    assert info["top_eigenvalues"] == pytest.approx(top_eigenvalues(run, mode), rel=1e-3)
    other = "train" if mode == "eval" else "eval"
    # the mode matters for a BatchNorm net, so the check above could not pass with the other mode's Hessian
    assert top_eigenvalues(run, other)[0] != pytest.approx(info["top_eigenvalues"][0], rel=1e-2)


def test_the_default_is_eval_mode():
    assert validate_config(BN_STUDY).analysis.hessian is not None
    assert validate_config(BN_STUDY).analysis.hessian.mode == "eval"


def copy_a_operator(run: Run, mode: str) -> HessianOperator:
    model = run.fresh_model()
    model.load_state_dict(run.load_state(copies_key("dense", 0, 0), "a"))
    return HessianOperator(model, [(run.data.x_train[:64], run.data.y_train[:64])], mode=mode)


@pytest.mark.parametrize(
    ("mode", "kind", "method"), [("eval", "exact", "ggn-exact"), ("train", "exact", "hvp-exact"), ("eval", "hutchinson", "hutchinson")]
)
def test_the_stage_records_how_its_diagonal_was_computed(tmp_path, mode, kind, method):
    hessian = {"mode": mode, "top_k": 0, "trace_max_hvps": 10, "diagonal": kind, "diagonal_samples": 20}
    small = {"model": {"depth": 1, "width": 2}, "analysis": {"hessian": hessian}}  # 354 weights: the products' reference is cheap
    run = Run(validate_config(merge(BN_STUDY, small)), tmp_path / "runs")
    run.run()
    key = hessian_key("dense", 0, 0)
    about = run.stage_info(key)["diagonal"]
    arrays = dict(np.load(run.stage_dir(key) / "hessian.npz", allow_pickle=False))
    # eval mode: the ConvNet's BatchNorm is an affine map, so the GGN is exact; train mode: batch statistics, products
    assert about["method"] == method and about["exact"] == (kind == "exact")
    products = exact_diagonal(copy_a_operator(run, mode), route="hvp").values.numpy()
    if kind == "exact":
        assert "diagonal_stderr" not in arrays and "stderr_mean" not in about
        np.testing.assert_allclose(arrays["diagonal"], products, rtol=1e-4, atol=1e-6 * float(np.abs(products).max()))
        assert about["ggn_entries"] + about["hvp_entries"] == arrays["diagonal"].size
        assert about["hvp_entries"] == (0 if method == "ggn-exact" else arrays["diagonal"].size)
    else:
        se = arrays["diagonal_stderr"]
        assert se.shape == arrays["diagonal"].shape and about["samples"] == 20
        assert about["stderr_mean"] == pytest.approx(float(se.mean()), rel=1e-6)
        # the stated errors are the estimate's: most entries lie within 4 of them of the exact value
        assert float(np.mean(np.abs(arrays["diagonal"] - products) <= 4 * se + 1e-8)) >= 0.9
