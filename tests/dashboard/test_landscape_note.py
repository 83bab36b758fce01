"""The landscape tab says which models of a four-solution plane are off it, and how far, instead of drawing them as if on it."""

from app.dashboard.pages.study.landscape import off_plane


def test_off_plane_models_are_named_with_their_distance():
    line = "".join(str(part) for part in off_plane({"residual": {"A": 0.0, "B": 0.0, "A'": 0.8235, "B'": 0.7263}}))
    assert "A' 0.82, B' 0.73" in line and "projections" in line
    assert "A 0" not in line and "B 0" not in line, "the spanning copies lie on the plane"


def test_planes_through_every_model_say_nothing():
    assert off_plane({"residual": None}) == [] and off_plane({}) == []
    assert off_plane({"residual": {"A": 0.0, "B": 0.0}}) == []
