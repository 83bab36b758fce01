"""The stage-key grammar: every key builder's output parses back to what built it, and bad keys are named."""

from __future__ import annotations

import pytest

from lmc_core.foundations.layout import (
    copies_key,
    eval_key,
    experts_key,
    hessian_key,
    mask_id,
    mask_key,
    parse_key,
    parse_mask_id,
    path_key,
    rewind_key,
    surface_key,
    synthetic_key,
)

MASKS = ["dense", mask_id("imp", 625, 2), mask_id("distilled.dm", 0, 1), mask_id("combined.dm.r2", 0, 3)]


@pytest.mark.parametrize("mid", MASKS)
@pytest.mark.parametrize("build, kind", [(copies_key, "copies"), (path_key, "path"), (surface_key, "surface"), (hessian_key, "hessian")])
def test_subnetwork_keys_round_trip(build, kind, mid):
    ref = parse_key(build(mid, 625, 3))
    source, _, rnd = parse_mask_id(mid)
    assert (ref.kind, ref.mask, ref.source, ref.round, ref.k, ref.pair) == (kind, mid, source, rnd, 625, 3)


def test_other_keys_round_trip():
    assert parse_key(rewind_key(0)).kind == "init" and parse_key(rewind_key(0)).k == 0
    assert (parse_key(rewind_key(625)).kind, parse_key(rewind_key(625)).k) == ("parent", 625)
    ref = parse_key(mask_key(mask_id("combined.dm.r2", 0, 3)))
    assert (ref.kind, ref.source, ref.round, ref.k) == ("mask", "combined.dm.r2", 3, 0)
    assert (parse_key(synthetic_key("dm")).kind, parse_key(synthetic_key("dm")).set) == ("synthetic", "dm")
    assert (parse_key(eval_key("dm")).kind, parse_key(eval_key("dm")).set) == ("synthetic_eval", "dm")
    assert parse_key(experts_key("0123456789ab")).kind == "experts"


def test_mask_ids_round_trip_and_dense_is_round_zero():
    assert parse_mask_id(mask_id("distilled.dm", 625, 4)) == ("distilled.dm", 625, 4)
    assert mask_id("imp", 625, 0) == "dense" and parse_mask_id("dense") == ("dense", None, 0)


@pytest.mark.parametrize("key", ["", "foo", "parent/x", "copies/dense/k1", "mask/imp-k0", "synthetic/a/b", "path/dense/k1/p"])
def test_bad_keys_name_the_grammar(key):
    with pytest.raises(ValueError, match=r"not a (stage key|mask id)"):
        parse_key(key)
