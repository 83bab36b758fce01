"""The Hessian tab's numbers say what the diagonal is, fed what the API makes of a stage."""

from __future__ import annotations

import numpy as np

from app.api.figures import hessian as hessian_figure
from app.dashboard.pages.study.hessian import numbers


def texts(data: dict) -> list[str]:
    return [str(span.children) for span in numbers(data)]


def test_the_numbers_name_the_diagonal_and_why_products_were_used():
    diag = np.array([0.5, 1.0, 2.0])
    about = {
        "method": "ggn+hvp-exact",
        "ggn_entries": 1,
        "hvp_entries": 2,
        "fallback": {"features.0.weight": "features.1 (GroupNorm) after features.0 is not piecewise linear in its input", "x.bias": "same"},
    }
    data = hessian_figure("hessian/dense/k0/p0", {"diagonal": diag}, {"diagonal": about, "hvps": 2}, 3, "list")
    lines = texts(data)
    assert "diagonal: exact Hessian diagonal H_ii (GGN, exact there, for 1 weights; one Hessian-vector product each for 2)" in lines
    assert any(
        line.startswith("products, not the GGN, for features.0.weight and 1 more parameters: features.1 (GroupNorm)") for line in lines
    )
    ggn = hessian_figure("hessian/dense/k0/p0", {"diagonal": diag}, {"diagonal": {"method": "ggn-exact"}}, 3, "list")
    assert [t for t in texts(ggn) if t.startswith(("diagonal", "products"))] == [
        "diagonal: exact Hessian diagonal H_ii (GGN, exact for this network)"
    ]
    assert not any(t.startswith("diagonal") for t in texts({"trace": 1.0}))  # no diagonal: nothing claimed
