"""Synthetic training sets: multi-formation decode/encode, initialisers, baselines, files and imports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmc_core.data.dataset import Dataset, Kind, load_dataset
from lmc_core.distill.synthetic import (
    SyntheticSet,
    decode,
    decode_labels,
    encode,
    import_synthetic,
    init_from_real,
    init_noise,
    noise_like,
    random_subset,
)
from lmc_core.foundations.config import DataConfig

CLASSES = 4


def fake(shape: tuple[int, ...], kind: Kind, per_class: int = 12, n_test: int = 8, seed: int = 0, **kw) -> Dataset:
    """Return a tiny dataset: distinct random inputs of `shape`, labels cycling over 4 classes."""
    g = torch.Generator().manual_seed(seed)
    n = per_class * CLASSES
    x = torch.randn((n + n_test, *shape), generator=g)
    y = torch.arange(n + n_test) % CLASSES
    return Dataset("fake", x[:n], y[:n], x[n:], y[n:], CLASSES, kind, **kw)


IMAGES = fake((1, 8, 8), "image")
SIGNALS = fake((1, 16), "signal")
RGB = fake((3, 8, 8), "image", mean=(0.5, 0.4, 0.3), std=(0.25, 0.2, 0.1))


def tile_constant(n: int, c: int, h: int, w: int, f: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return stored images whose tile (i, j) of image n, channel ch is the constant 1000n + 100ch + 10i + j,
    and the constant each decoded example (n*f*f + i*f + j) must then hold, shape (N*f*f, C)."""
    th, tw = h // f, w // f
    images = torch.empty(n, c, h, w)
    values = torch.empty(n * f * f, c)
    for k in range(n):
        for ch in range(c):
            for i in range(f):
                for j in range(f):
                    v = 1000.0 * k + 100.0 * ch + 10.0 * i + j
                    images[k, ch, i * th : (i + 1) * th, j * tw : (j + 1) * tw] = v
                    values[k * f * f + i * f + j, ch] = v
    return images, values


# ---------------------------------------------------------------------------------------------
# decode / encode


@pytest.mark.parametrize("f", [2, 4])
def test_decode_image_shapes_and_labels(f: int) -> None:
    images = torch.randn(3, 2, 8, 8)
    labels = torch.tensor([2, 0, 3])
    assert decode(images, f, "image").shape == (3 * f * f, 2, 8, 8)
    assert decode_labels(labels, f, "image").tolist() == [2] * f * f + [0] * f * f + [3] * f * f


def test_decode_signal_shapes_and_labels() -> None:
    assert decode(torch.randn(3, 2, 16), 4, "signal").shape == (12, 2, 16)
    assert decode_labels(torch.tensor([1, 3]), 4, "signal").tolist() == [1] * 4 + [3] * 4


@pytest.mark.parametrize(("h", "w", "f"), [(8, 8, 2), (8, 8, 4), (8, 12, 2)])
def test_decode_constant_tiles_become_constant_images_in_row_major_order(h: int, w: int, f: int) -> None:
    images, values = tile_constant(2, 2, h, w, f)
    out = decode(images, f, "image")
    expected = values[:, :, None, None].expand(-1, -1, h, w)
    assert torch.equal(out, expected)


def test_decode_constant_segments_become_constant_signals() -> None:
    f, length = 4, 16
    images = torch.empty(2, 3, length)
    expected = torch.empty(2 * f, 3, length)
    for n in range(2):
        for c in range(3):
            for i in range(f):
                v = 100.0 * n + 10.0 * c + i
                images[n, c, i * 4 : (i + 1) * 4] = v
                expected[n * f + i, c] = v
    assert torch.equal(decode(images, f, "signal"), expected)


def test_decode_upsamples_bilinearly() -> None:
    images = torch.randn(1, 1, 8, 8)
    out = decode(images, 2, "image")
    tile = images[:, :, 4:8, 0:4]  # tile (1, 0) -> decoded index 2
    ref = F.interpolate(tile, size=(8, 8), mode="bilinear", align_corners=False)
    assert torch.equal(out[2:3], ref)


def grad_of(t: torch.Tensor) -> torch.Tensor:
    """Return `t.grad`, which a backward pass has filled."""
    assert t.grad is not None
    return t.grad


def test_decode_is_differentiable_and_each_example_depends_on_its_tile_only() -> None:
    images = torch.randn(2, 1, 8, 8, requires_grad=True)
    decode(images, 2, "image").sum().backward()
    assert images.grad is not None and (images.grad != 0).all()

    images.grad = None
    decode(images, 2, "image")[1 * 4 + 0 * 2 + 1].sum().backward()  # image 1, tile (0, 1)
    touched = grad_of(images) != 0
    expected = torch.zeros_like(touched)
    expected[1, :, 0:4, 4:8] = True
    assert torch.equal(touched, expected)

    signal = torch.randn(2, 1, 16, requires_grad=True)
    decode(signal, 4, "signal").sum().backward()
    assert (grad_of(signal) != 0).all()


def test_decode_factor_one_is_identity_and_bad_factors_refused() -> None:
    x = torch.randn(2, 1, 8, 8)
    assert decode(x, 1, "image") is x
    v = torch.randn(5, 3)
    assert decode(v, 1, "vector") is v
    with pytest.raises(ValueError, match=r"\(8, 8\).*factor 3"):
        decode(x, 3, "image")
    with pytest.raises(ValueError, match=r"\(10,\).*factor 4"):
        decode(torch.randn(1, 1, 10), 4, "signal")
    with pytest.raises(ValueError, match="vector"):
        decode(v, 2, "vector")
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        decode(torch.randn(2, 8, 8), 2, "image")


@pytest.mark.parametrize("f", [2, 4])
def test_encode_decode_exact_on_constant_examples(f: int) -> None:
    # Each decoded example constant: encode packs it into a constant tile, decode restores it.
    values = torch.randn(3 * f * f, 2)
    x = values[:, :, None, None].expand(-1, -1, 8, 8).contiguous()
    stored = encode(x, f, "image")
    assert stored.shape == (3, 2, 8, 8)
    assert torch.allclose(decode(stored, f, "image"), x, rtol=0, atol=1e-6)
    # and the other way round: a stored set constant per tile is a fixed point of encode(decode(.)).
    images, _ = tile_constant(2, 2, 8, 8, f)
    assert torch.equal(encode(decode(images, f, "image"), f, "image"), images)

    sig = torch.randn(2 * f, 1)[:, :, None].expand(-1, -1, 16).contiguous()
    assert torch.allclose(decode(encode(sig, f, "signal"), f, "signal"), sig, rtol=0, atol=1e-6)


def test_encode_decode_approximates_smooth_inputs_in_order() -> None:
    u = torch.linspace(0, 1, 32)
    phases = torch.arange(8, dtype=torch.float32)  # 8 distinct smooth images, 2 stored with factor 2
    x = torch.sin(2 * torch.pi * (u[None, :, None] + 0.5 * u[None, None, :]) + phases[:, None, None])[:, None]
    back = decode(encode(x, 2, "image"), 2, "image")
    assert back.shape == x.shape
    err = (back - x).abs()
    assert err.mean() < 0.05 and err.max() < 0.2  # largest at the borders, where bilinear extrapolates flat
    assert (back - x.roll(1, dims=0)).abs().mean() > 10 * err.mean()  # the order of examples is kept

    t = torch.linspace(0, 1, 64)
    s = torch.sin(2 * torch.pi * t[None, :] + phases[:, None])[:, None]
    back = decode(encode(s, 4, "signal"), 4, "signal")
    err = (back - s).abs()
    assert err.mean() < 0.05 and err.max() < 0.2
    assert (back - s.roll(1, dims=0)).abs().mean() > 10 * err.mean()


def test_encode_refuses_a_count_not_multiple_of_tiles() -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        encode(torch.randn(6, 1, 8, 8), 2, "image")


# ---------------------------------------------------------------------------------------------
# The set


def test_set_validates_with_messages_naming_the_fix() -> None:
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match="float32"):
        SyntheticSet(x.double(), y, 4, "image")
    with pytest.raises(ValueError, match=r"int64 of shape \(4,\)"):
        SyntheticSet(x, y.int(), 4, "image")
    with pytest.raises(ValueError, match=r"int64 of shape \(4,\)"):
        SyntheticSet(x, y[:3], 4, "image")
    with pytest.raises(ValueError, match=r"outside 0\.\.2"):
        SyntheticSet(x, y, 3, "image")
    with pytest.raises(ValueError, match="factor 3"):
        SyntheticSet(x, y, 4, "image", factor=3)
    with pytest.raises(ValueError, match="factor must be 1"):
        SyntheticSet(torch.randn(4, 5), y, 4, "vector", factor=2)
    with pytest.raises(ValueError, match="kind"):
        SyntheticSet(x, y, 4, "video")
    with pytest.raises(ValueError, match="lr"):
        SyntheticSet(x, y, 4, "image", lr=-0.1)


def test_set_counts_and_decode() -> None:
    s = SyntheticSet(torch.randn(5, 1, 8, 8), torch.tensor([0, 0, 1, 3, 3]), 4, "image", factor=2)
    assert s.decoded_count == 20
    assert s.images_per_class == [2, 1, 0, 2]
    x, y = s.decode()
    assert x.shape == (20, 1, 8, 8) and len(y) == 20
    assert y.tolist() == [0] * 8 + [1] * 4 + [3] * 8
    assert SyntheticSet(torch.randn(6, 1, 16), torch.zeros(6, dtype=torch.int64), 4, "signal", factor=4).decoded_count == 24


def test_detach_copies_to_cpu_without_grad() -> None:
    s = SyntheticSet(torch.randn(4, 1, 8, 8, requires_grad=True), torch.arange(4), 4, "image", provenance={"a": [1]})
    d = s.detach()
    assert not d.images.requires_grad and d.images.device.type == "cpu"
    assert torch.equal(d.images, s.images.detach())
    d.provenance["a"].append(2)
    d.images.add_(1)
    assert s.provenance == {"a": [1]} and not torch.equal(d.images, s.images.detach())


def test_save_load_round_trip_is_exact(tmp_path: Path) -> None:
    prov = {"method": "mtt", "settings": {"steps": 3, "lrs": [0.1, 0.01]}, "loss": [1.5, 0.25, 1e-7], "seed": 7}
    s = SyntheticSet(
        torch.randn(8, 1, 8, 8, requires_grad=True), torch.arange(8) % 4, 4, "image", factor=2, lr=0.012345678901234567, provenance=prov
    )
    folder = tmp_path / "syn"
    s.save(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["images.safetensors", "synthetic.json"]
    t = SyntheticSet.load(folder)
    assert torch.equal(t.images, s.images.detach()) and t.images.dtype == torch.float32
    assert torch.equal(t.labels, s.labels) and t.labels.dtype == torch.int64
    assert (t.num_classes, t.kind, t.factor, t.lr, t.provenance) == (4, "image", 2, s.lr, prov)


def test_load_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        SyntheticSet.load(tmp_path / "nowhere")
    s = SyntheticSet(torch.randn(4, 1, 16), torch.arange(4), 4, "signal")
    s.save(tmp_path / "bad")
    (tmp_path / "bad" / "synthetic.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad"):
        SyntheticSet.load(tmp_path / "bad")
    s.save(tmp_path / "bad2")
    (tmp_path / "bad2" / "synthetic.json").write_text('{"kind": "signal"}')
    with pytest.raises(ValueError, match=r"bad2.*num_classes"):
        SyntheticSet.load(tmp_path / "bad2")


def test_as_dataset_trains_on_decoded_and_tests_on_real() -> None:
    s = init_from_real(IMAGES, ipc=1, factor=2, seed=0)
    ds = s.as_dataset(IMAGES)
    assert ds.name == "synthetic:init-real"
    assert ds.x_train.shape == (16, 1, 8, 8) and ds.y_train.tolist() == [c for c in range(4) for _ in range(4)]
    assert not ds.x_train.requires_grad
    assert torch.equal(ds.x_test, IMAGES.x_test) and torch.equal(ds.y_test, IMAGES.y_test)
    assert (ds.kind, ds.num_classes, ds.mean, ds.std) == (IMAGES.kind, IMAGES.num_classes, IMAGES.mean, IMAGES.std)
    plain = SyntheticSet(torch.randn(4, 1, 8, 8), torch.arange(4), 4, "image")
    assert plain.as_dataset(IMAGES).name == "synthetic:synthetic"


def test_as_dataset_refuses_mismatches() -> None:
    small = SyntheticSet(torch.randn(4, 1, 4, 4), torch.arange(4), 4, "image")
    with pytest.raises(ValueError, match=r"\(1, 4, 4\).*\(1, 8, 8\)"):
        small.as_dataset(IMAGES)
    five = SyntheticSet(torch.randn(4, 1, 8, 8), torch.arange(4), 5, "image")
    with pytest.raises(ValueError, match="5 classes"):
        five.as_dataset(IMAGES)


# ---------------------------------------------------------------------------------------------
# Initialisers and baselines


def test_init_from_real_packs_distinct_real_examples_of_each_class() -> None:
    ipc, f = 2, 2
    s = init_from_real(IMAGES, ipc=ipc, factor=f, seed=3)
    assert s.images.shape == (ipc * CLASSES, 1, 8, 8) and s.factor == f
    assert s.labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    idx = torch.tensor(s.provenance["indices"])
    assert len(idx) == ipc * CLASSES * f * f and len(set(idx.tolist())) == len(idx)
    assert torch.equal(IMAGES.y_train[idx], decode_labels(s.labels, f, "image"))
    assert torch.equal(s.images, encode(IMAGES.x_train[idx], f, "image"))

    # Independently of the recorded indices: each tile is the area-average of a distinct real example of its class.
    pooled = F.adaptive_avg_pool2d(IMAGES.x_train, (4, 4))
    used = set()
    for n in range(len(s.images)):
        for i in range(f):
            for j in range(f):
                tile = s.images[n, :, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4]
                hits = [k for k in range(len(pooled)) if torch.allclose(pooled[k], tile, atol=1e-6)]
                assert len(hits) == 1 and IMAGES.y_train[hits[0]] == s.labels[n]
                used.add(hits[0])
    assert len(used) == ipc * CLASSES * f * f


def test_init_from_real_is_seeded() -> None:
    a, b = init_from_real(SIGNALS, 2, 2, seed=1), init_from_real(SIGNALS, 2, 2, seed=1)
    c = init_from_real(SIGNALS, 2, 2, seed=2)
    assert torch.equal(a.images, b.images) and a.provenance["indices"] == b.provenance["indices"]
    assert not torch.equal(a.images, c.images)
    assert a.images.shape == (8, 1, 16) and a.decoded_count == 16
    assert torch.equal(a.images, encode(SIGNALS.x_train[torch.tensor(a.provenance["indices"])], 2, "signal"))


def test_init_from_real_factor_one_takes_real_rows() -> None:
    s = init_from_real(IMAGES, 3, 1, seed=0)
    idx = torch.tensor(s.provenance["indices"])
    assert torch.equal(s.images, IMAGES.x_train[idx])


def test_init_from_real_refuses_too_few_examples() -> None:
    with pytest.raises(ValueError, match=r"class 0 has 12 .* needs 32"):
        init_from_real(IMAGES, ipc=2, factor=4, seed=0)


def test_init_noise_is_seeded_standard_normal() -> None:
    a, b, c = init_noise(IMAGES, 50, 2, seed=0), init_noise(IMAGES, 50, 2, seed=0), init_noise(IMAGES, 50, 2, seed=1)
    assert a.images.shape == (200, 1, 8, 8) and a.labels.tolist() == [k for k in range(4) for _ in range(50)]
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert abs(float(a.images.mean())) < 0.05 and abs(float(a.images.std()) - 1) < 0.05
    assert a.factor == 2 and a.provenance["method"] == "init-noise"


def test_random_subset_picks_real_examples_with_their_labels() -> None:
    per_class = [1, 3, 0, 2]
    s = random_subset(IMAGES, per_class, seed=5)
    assert s.images_per_class == per_class and s.factor == 1 and s.provenance["method"] == "random-subset"
    flat = IMAGES.x_train.flatten(1)
    rows = []
    for img, label in zip(s.images, s.labels, strict=True):
        match = (flat == img.flatten()).all(dim=1).nonzero().flatten().tolist()
        assert len(match) == 1 and IMAGES.y_train[match[0]] == label
        rows.append(match[0])
    assert len(set(rows)) == len(rows)
    assert torch.equal(random_subset(IMAGES, per_class, seed=5).images, s.images)
    with pytest.raises(ValueError, match="class 1 has 12"):
        random_subset(IMAGES, [1, 13, 0, 0], seed=0)


def test_noise_like_keeps_labels_shapes_and_factor() -> None:
    s = init_from_real(IMAGES, 2, 2, seed=0)
    s.lr = 0.05
    n = noise_like(s, seed=1)
    assert n.images.shape == s.images.shape and torch.equal(n.labels, s.labels)
    assert (n.factor, n.kind, n.num_classes, n.lr) == (2, "image", 4, 0.05)
    assert n.provenance["method"] == "noise" and n.provenance["like"] == "init-real"
    assert not torch.equal(n.images, s.images) and torch.equal(n.images, noise_like(s, seed=1).images)


# ---------------------------------------------------------------------------------------------
# import_synthetic


def rgb_set(n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 3, 8, 8)).astype(np.float32), (np.arange(n) % CLASSES).astype(np.int64)


def test_import_npz(tmp_path: Path) -> None:
    x, y = rgb_set()
    np.savez(tmp_path / "s.npz", x=x, y=y)
    s = import_synthetic(tmp_path / "s.npz", RGB, factor=2)
    assert torch.equal(s.images, torch.from_numpy(x)) and torch.equal(s.labels, torch.from_numpy(y))
    assert (s.factor, s.kind, s.num_classes) == (2, "image", 4)
    import hashlib

    p = s.provenance
    assert (p["method"], p["file"], p["factor"], p["space"]) == ("import", str(tmp_path / "s.npz"), 2, "normalized")
    assert p["sha256"] == hashlib.sha256((tmp_path / "s.npz").read_bytes()).hexdigest()


@pytest.mark.parametrize("layout", ["tuple", "list", "dict"])
def test_import_pt(tmp_path: Path, layout: str) -> None:
    x, y = rgb_set()
    tx, ty = torch.from_numpy(x).requires_grad_(), torch.from_numpy(y)
    obj = {"tuple": (tx, ty), "list": [tx, ty], "dict": {"images": tx, "labels": ty}}[layout]
    torch.save(obj, tmp_path / "s.pt")
    s = import_synthetic(tmp_path / "s.pt", RGB)
    assert torch.equal(s.images, torch.from_numpy(x)) and torch.equal(s.labels, ty) and not s.images.requires_grad


@pytest.mark.parametrize("labels_name", ["labels.pt", "labels.npy", "labels.npz"])
def test_import_pt_with_separate_labels(tmp_path: Path, labels_name: str) -> None:
    # MTT publishes images_best.pt and labels_best.pt as two bare tensors.
    x, y = rgb_set()
    torch.save(torch.from_numpy(x), tmp_path / "images_best.pt")
    lp = tmp_path / labels_name
    if labels_name.endswith(".pt"):
        torch.save(torch.from_numpy(y), lp)
    elif labels_name.endswith(".npy"):
        np.save(lp, y)
    else:
        np.savez(lp, targets=y)
    s = import_synthetic(tmp_path / "images_best.pt", RGB, labels_path=lp)
    assert torch.equal(s.images, torch.from_numpy(x)) and s.labels.tolist() == y.tolist()
    assert s.provenance["labels_file"] == str(lp)
    with pytest.raises(ValueError, match="labels_path"):
        import_synthetic(tmp_path / "images_best.pt", RGB)


def test_import_transposes_channels_last(tmp_path: Path) -> None:
    x, y = rgb_set()
    np.savez(tmp_path / "nhwc.npz", images=x.transpose(0, 2, 3, 1), labels=y)
    s = import_synthetic(tmp_path / "nhwc.npz", RGB)
    assert s.images.shape == (8, 3, 8, 8) and torch.equal(s.images, torch.from_numpy(x))


def test_import_raw_space_is_normalised(tmp_path: Path) -> None:
    x, y = rgb_set()
    # Raw-space values: RGB's raw data has these channel means and stds (normalised-looking values are refused as raw).
    x = x * np.array(RGB.std, dtype=np.float32).reshape(1, 3, 1, 1) + np.array(RGB.mean, dtype=np.float32).reshape(1, 3, 1, 1)
    np.savez(tmp_path / "raw.npz", data=x, labels=y)
    s = import_synthetic(tmp_path / "raw.npz", RGB, space="raw")
    mean = torch.tensor(RGB.mean).reshape(1, 3, 1, 1)
    std = torch.tensor(RGB.std).reshape(1, 3, 1, 1)
    assert torch.allclose(s.images, (torch.from_numpy(x) - mean) / std)
    assert s.provenance["space"] == "raw"


class Evil:
    """Pickles as a call to `_touch`: if any loader unpickled it, the marker file would appear."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (_touch, (self.marker,))


def _touch(path: str) -> str:
    Path(path).write_text("code ran")
    return "owned"


class Plain:
    """A plain custom class: unpickling it would import and instantiate it."""

    marker: str

    def __setstate__(self, state: dict) -> None:
        Path(state["marker"]).write_text("code ran")


def test_import_refuses_pickled_objects_in_pt_without_running_them(tmp_path: Path) -> None:
    x, y = rgb_set()
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pt"
    torch.save({"images": torch.from_numpy(x), "labels": torch.from_numpy(y), "evil": Evil(marker)}, evil)
    plain = Plain()
    plain.marker = str(marker)
    torch.save((torch.from_numpy(x), torch.from_numpy(y), plain), tmp_path / "plain.pt")
    for p, name in ((evil, "_touch"), (tmp_path / "plain.pt", "Plain")):
        with pytest.raises(ValueError, match=r"refusing to unpickle arbitrary objects.*save plain tensors/arrays") as e:
            import_synthetic(p, RGB)
        assert str(p) in str(e.value) and name in str(e.value)
        assert not marker.exists()
    # Control: an unrestricted load of the same file does run the code, so the check above is meaningful.
    torch.load(evil, weights_only=False)
    assert marker.exists()


def test_import_refuses_npz_object_arrays(tmp_path: Path) -> None:
    x, y = rgb_set()
    np.savez(tmp_path / "obj.npz", images=np.array([x[0], "a"], dtype=object), labels=y)
    with pytest.raises(ValueError, match=r"obj\.npz.*refusing to unpickle arbitrary objects.*save plain tensors/arrays"):
        import_synthetic(tmp_path / "obj.npz", RGB)


def test_import_refuses_malformed_files(tmp_path: Path) -> None:
    x, y = rgb_set()

    def write(name: str, **arrays: Any) -> Path:  # Any: numpy's stubs would match **arrays against savez's allow_pickle
        np.savez(tmp_path / name, **arrays)
        return tmp_path / name

    cases = [
        (write("shape.npz", images=x[:, :, :4], labels=y), r"shape\.npz.*\(8, 3, 4, 8\).*expected \(N, 3, 8, 8\)"),
        (write("gray.npz", images=x[:, :1], labels=y), r"expected \(N, 3, 8, 8\)"),
        (write("len.npz", images=x, labels=y[:5]), r"len\.npz.*\(5,\).*expected \(8,\)"),
        (write("range.npz", images=x, labels=y + 1), r"range\.npz.*\[1, 4\].*expected 0\.\.3"),
        (write("neg.npz", images=x, labels=y - 1), r"\[-1, 2\].*expected 0\.\.3"),
        (write("float.npz", images=x, labels=y.astype(np.float32)), r"float\.npz.*integer.*float32"),
        (write("nan.npz", images=np.where(x > 2, np.nan, x).astype(np.float32), labels=y), r"nan\.npz.*NaN"),
        (write("keys.npz", pixels=x, labels=y), r"keys\.npz.*images, x, data.*present: pixels, labels"),
        (write("nolabels.npz", images=x, classes=y), r"labels.*present: images, classes"),
    ]
    for path, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            import_synthetic(path, RGB)
    (tmp_path / "s.h5").write_bytes(b"\0")
    with pytest.raises(ValueError, match=r"s\.h5.*extension '\.h5'.*\.npz, \.pt"):
        import_synthetic(tmp_path / "s.h5", RGB)
    with pytest.raises(ValueError, match="space"):
        import_synthetic(tmp_path / "keys.npz", RGB, space="pixels")
    with pytest.raises(FileNotFoundError, match=r"missing\.npz"):
        import_synthetic(tmp_path / "missing.npz", RGB)
    with pytest.raises(ValueError, match=r"factor 3"):
        import_synthetic(write("ok.npz", images=x, labels=y), RGB, factor=3)


# ---------------------------------------------------------------------------------------------
# import_synthetic: the value space (raw / normalised) and ZCA-whitened sets


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset(DataConfig(name="digits"))  # raw pixels in [0, 1]: mean 0.305, std 0.376


@pytest.fixture(scope="module")
def mnist1d() -> Dataset:
    return load_dataset(DataConfig(name="mnist1d"))  # raw mean ~0, std ~1: raw and normalised nearly coincide


def to_raw(ds: Dataset, x: torch.Tensor) -> torch.Tensor:
    assert ds.mean is not None and ds.std is not None
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return x * torch.tensor(ds.std).reshape(shape) + torch.tensor(ds.mean).reshape(shape)


def real_examples(ds: Dataset, per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the first `per_class` normalised training examples of each class, sorted by class, and their labels."""
    idx = torch.cat([torch.nonzero(ds.y_train == c).flatten()[:per_class] for c in range(ds.num_classes)])
    return ds.x_train[idx].clone(), ds.y_train[idx].clone()


def idc_style(ds: Dataset, ipc: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (raw stored images, labels, the same images normalised): IDC-style factor-2 sets of real examples.

    IDC saves torch.save([images, labels]) with images in the raw [0, 1] pixel space; each stored image packs
    four real examples of its class, area-averaged into 2 x 2 tiles."""
    x, _ = real_examples(ds, 4 * ipc)
    normalised = encode(x, 2, "image")
    return to_raw(ds, normalised), torch.arange(ds.num_classes).repeat_interleave(ipc), normalised


def test_import_refuses_raw_images_declared_normalized(tmp_path: Path, digits: Dataset) -> None:
    raw, labels, _ = idc_style(digits)
    path = tmp_path / "idc_digits.pt"
    torch.save([raw, labels], path)
    with pytest.raises(ValueError, match=r"space: raw") as e:
        import_synthetic(path, digits, factor=2)
    msg = str(e.value)
    assert str(path) in msg and "raw" in msg and "mean" in msg
    assert f"{float(raw.mean()):.3g}" in msg  # the observed channel mean
    assert f"[{float(raw.min()):.3g}, {float(raw.max()):.3g}]" in msg  # the observed range
    # the same for a 3-channel set: every channel looks raw
    x, y = rgb_set()
    rgb_raw = to_raw(RGB, torch.from_numpy(x))
    np.savez(tmp_path / "rgb_raw.npz", images=rgb_raw.numpy(), labels=y)
    with pytest.raises(ValueError, match=r"rgb_raw\.npz.*space: raw"):
        import_synthetic(tmp_path / "rgb_raw.npz", RGB)


def test_import_raw_images_with_space_raw_land_in_the_normalised_space(tmp_path: Path, digits: Dataset) -> None:
    raw, labels, normalised = idc_style(digits)
    path = tmp_path / "idc_digits.pt"
    torch.save([raw, labels], path)
    s = import_synthetic(path, digits, factor=2, space="raw")
    assert torch.allclose(s.images, normalised, atol=1e-5)
    assert abs(float(s.images.mean())) < 0.2 and abs(float(s.images.std()) - 1) < 0.2  # the real normalised data: 0, 1
    assert s.provenance["space"] == "raw" and s.decoded_count == 4 * len(raw)


def test_import_refuses_normalised_images_declared_raw(tmp_path: Path, digits: Dataset) -> None:
    # MTT / DC / DM save images in the normalised space: images_best.pt and labels_best.pt, two bare tensors.
    x, y = real_examples(digits, 3)
    torch.save(x, tmp_path / "images_best.pt")
    torch.save(y, tmp_path / "labels_best.pt")
    with pytest.raises(ValueError, match=r"images_best\.pt.*space: normalized") as e:
        import_synthetic(tmp_path / "images_best.pt", digits, labels_path=tmp_path / "labels_best.pt", space="raw")
    assert f"[{float(x.min()):.3g}, {float(x.max()):.3g}]" in str(e.value)
    s = import_synthetic(tmp_path / "images_best.pt", digits, labels_path=tmp_path / "labels_best.pt")
    assert torch.equal(s.images, x)


def test_import_refuses_values_that_fit_neither_space(tmp_path: Path, digits: Dataset) -> None:
    raw, labels, _ = idc_style(digits)
    pixels = (raw * 255).round().to(torch.uint8)  # 8-bit pixels, never divided by 255
    np.savez(tmp_path / "bytes.npz", images=pixels.numpy(), labels=labels.numpy())
    for space in ("raw", "normalized"):
        with pytest.raises(ValueError, match=r"bytes\.npz.*fit neither.*255"):
            import_synthetic(tmp_path / "bytes.npz", digits, factor=2, space=space)


def test_import_refuses_sets_marked_zca_whitened(tmp_path: Path, digits: Dataset) -> None:
    x, y = real_examples(digits, 2)
    torch.save({"images": x, "labels": y, "zca": torch.tensor(True)}, tmp_path / "flag.pt")
    np.savez(tmp_path / "matrix.npz", images=x.numpy(), labels=y.numpy(), zca_matrix=np.eye(64, dtype=np.float32))
    for path in (tmp_path / "flag.pt", tmp_path / "matrix.npz"):
        with pytest.raises(ValueError, match=r"ZCA.*images_zca_") as e:
            import_synthetic(path, digits)
        assert str(path) in str(e.value)
    # a flag that says "not whitened" is no reason to refuse
    torch.save({"images": x, "labels": y, "zca": torch.tensor(False)}, tmp_path / "plain.pt")
    assert torch.equal(import_synthetic(tmp_path / "plain.pt", digits).images, x)


def test_import_accepts_genuine_sets_of_either_space(tmp_path: Path, digits: Dataset) -> None:
    x, y = real_examples(digits, 3)
    noise = init_noise(digits, 3, 1, seed=0).images  # a noise-initialised set: white noise in the normalised space
    drifted = 1.5 * x + 0.3  # a distilled set that drifted: more contrast, shifted
    for name, images in (("real.npz", x), ("noise.npz", noise), ("drifted.npz", drifted)):
        np.savez(tmp_path / name, images=images.numpy(), labels=y.numpy())
        assert torch.equal(import_synthetic(tmp_path / name, digits).images, images)
    raw = 1.2 * to_raw(digits, x) - 0.05  # a raw set with more contrast, slightly outside [0, 1]
    np.savez(tmp_path / "raw.npz", images=raw.numpy(), labels=y.numpy())
    s = import_synthetic(tmp_path / "raw.npz", digits, space="raw")
    assert digits.mean is not None and digits.std is not None
    assert torch.allclose(s.images, (raw - digits.mean[0]) / digits.std[0], atol=1e-5)


def test_import_checks_nothing_where_raw_and_normalised_spaces_coincide(tmp_path: Path, mnist1d: Dataset) -> None:
    # MNIST-1D's raw data already has mean ~0 and std ~1: either reading of a set is as good as the other.
    x, y = real_examples(mnist1d, 2)
    np.savez(tmp_path / "m.npz", images=x.numpy(), labels=y.numpy())
    for space in ("normalized", "raw"):
        assert import_synthetic(tmp_path / "m.npz", mnist1d, space=space).images.shape == x.shape
