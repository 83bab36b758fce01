"""Tests of the image-folder reader (lmc_core.data.readers.read_image_folder) on tiny generated folders.

Pixels are known exactly (PNG is lossless), so decoding, the shorter-side resize, the centre crop, label order and
normalisation are checked against hand-computed values; each fault in a user's folder must name itself and the fix.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from lmc_core.data.dataset import IMAGENET_MEAN, IMAGENET_STD, Dataset, load_dataset
from lmc_core.data.readers import decode_image, read_image_folder
from lmc_core.foundations.config import DataConfig
from tests.helpers.image_folders import class_colour, write_image, write_image_folder

CLASSES = ["cat", "ant", "bee"]  # deliberately unsorted: sorted order is ant, bee, cat


def load(root, **kw) -> Dataset:
    return load_dataset(DataConfig(name="image_folder", path=str(root), **kw))


def colour_of(x: torch.Tensor) -> tuple[int, ...]:
    """Return the 8-bit RGB of a flat-colour decoded image in [0, 1]."""
    return tuple(round(v * 255) for v in x[:, 0, 0].tolist())


# ---------------------------------------------------------------------------------------------
# Decoding, resizing and labels


def test_round_trip_labels_follow_sorted_class_folders(tmp_path):
    colours = write_image_folder(tmp_path, CLASSES, n_train=3, n_test=2, size=(8, 8))
    ds = load(tmp_path, image_size=8, normalize=False)
    assert ds.kind == "image" and ds.num_classes == 3
    assert ds.x_train.shape == (9, 3, 8, 8) and ds.x_test.shape == (6, 3, 8, 8)
    assert ds.x_train.dtype == torch.float32
    # label i = the i-th folder name in sorted order; images of a class are contiguous, in file-name order
    assert ds.y_train.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and ds.y_test.tolist() == [0, 0, 1, 1, 2, 2]
    for x, y in ((ds.x_train, ds.y_train), (ds.x_test, ds.y_test)):
        for xi, yi in zip(x, y, strict=True):
            assert colour_of(xi) == colours[sorted(CLASSES)[int(yi)]]
            want = torch.tensor(colours[sorted(CLASSES)[int(yi)]], dtype=torch.float32) / 255
            assert torch.equal(xi, want.reshape(3, 1, 1).expand(3, 8, 8))  # exact: pixel / 255 in float32


def test_pixels_exact_and_centre_crop_of_a_tall_image(tmp_path):
    # A 6 (wide) x 10 (tall) image at image_size 6: no resize (its shorter side is already 6); the centre crop keeps
    # rows 2..7 (offset round((10 - 6) / 2) = 2), every column.
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(10, 6, 3), dtype=np.uint8)
    write_image(tmp_path / "train" / "a" / "x.png", pixels)
    write_image(tmp_path / "val" / "a" / "x.png", pixels[::-1].copy())
    ds = load(tmp_path, image_size=6, normalize=False)
    want = torch.from_numpy(pixels[2:8].transpose(2, 0, 1).astype(np.float32)) / 255
    assert torch.equal(ds.x_train[0], want)
    assert torch.equal(ds.x_test[0], torch.from_numpy(pixels[::-1][2:8].transpose(2, 0, 1).astype(np.float32)) / 255)


def test_shorter_side_resize_then_centre_crop(tmp_path):
    # 80 wide x 40 tall, the left quarter red, the rest blue. Shorter side to 20: 40 x 20, the red band is columns
    # 0..9; the centre crop takes columns 10..29, so (apart from the blended edge column) the crop is all blue.
    # Squashing to 20 x 20 would keep 5 red columns, a corner crop 10.
    pixels = np.zeros((40, 80, 3), dtype=np.uint8)
    pixels[:, :20, 0] = 255
    pixels[:, 20:, 2] = 255
    write_image(tmp_path / "train" / "a" / "x.png", pixels)
    write_image(tmp_path / "val" / "a" / "x.png", pixels)
    x = load(tmp_path, image_size=20, normalize=False).x_train[0]
    assert x.shape == (3, 20, 20)
    assert torch.all(x[0, :, 1:] == 0) and torch.all(x[2, :, 1:] == 1)
    assert decode_image(tmp_path / "train" / "a" / "x.png", 20).shape == (3, 20, 20)


def test_resize_keeps_a_flat_colour_and_the_aspect_arithmetic(tmp_path):
    # 50 x 30 at image_size 12: the shorter side 30 -> 12, the longer int(12 * 50 / 30) = 20, then a 12 x 12 crop.
    colour = (200, 100, 7)
    write_image(tmp_path / "img.png", np.broadcast_to(np.array(colour, dtype=np.uint8), (30, 50, 3)).copy())
    out = decode_image(tmp_path / "img.png", 12)
    assert out.shape == (3, 12, 12) and out.dtype == np.uint8
    assert np.all(out == np.array(colour, dtype=np.uint8).reshape(3, 1, 1))  # any bilinear average of one colour is that colour


def test_greyscale_palette_and_alpha_images_become_rgb(tmp_path):
    grey = np.full((8, 8), 77, dtype=np.uint8)
    write_image(tmp_path / "train" / "a" / "grey.png", grey)
    from PIL import Image

    rgba = Image.new("RGBA", (8, 8), (10, 20, 30, 128))
    rgba.save(tmp_path / "train" / "a" / "rgba.png")
    palette = Image.new("P", (8, 8), 1)  # every pixel is palette entry 1
    palette.putpalette([0, 0, 0, 40, 50, 60])
    palette.save(tmp_path / "train" / "a" / "zpalette.png")
    write_image(tmp_path / "val" / "a" / "v.png", grey)
    ds = load(tmp_path, image_size=8, normalize=False)
    assert ds.x_train.shape == (3, 3, 8, 8)
    assert colour_of(ds.x_train[0]) == (77, 77, 77)
    assert colour_of(ds.x_train[1]) == (10, 20, 30)  # alpha dropped, colour kept
    assert colour_of(ds.x_train[2]) == (40, 50, 60)


def test_jpeg_with_imagenet_style_upper_case_suffix(tmp_path):
    colour = (180, 60, 120)
    write_image_folder(tmp_path, ["n01"], n_train=2, n_test=1, size=(16, 16), suffix=".JPEG")
    (tmp_path / "train" / "n01" / "notes.txt").write_text("not an image: ignored")
    ds = load(tmp_path, image_size=16, normalize=False)
    assert len(ds.x_train) == 2 and len(ds.x_test) == 1
    # JPEG is lossy: a flat colour comes back within a few levels
    got = np.array(colour_of(ds.x_train[0]))
    assert np.abs(got - np.array(class_colour(0))).max() <= 3
    assert colour != class_colour(0)  # (the helper's colour, not this one, was written)


def test_data_classes_pick_a_subset_in_the_given_label_order(tmp_path):
    colours = write_image_folder(tmp_path, CLASSES, n_train=2, n_test=1, size=(8, 8))
    write_image_folder(tmp_path / "extra", ["dog"], n_train=1, n_test=1)  # unrelated folder, not a split
    ds = load(tmp_path, image_size=8, normalize=False, classes=["cat", "ant"])
    assert ds.num_classes == 2 and ds.y_train.tolist() == [0, 0, 1, 1]
    assert colour_of(ds.x_train[0]) == colours["cat"] and colour_of(ds.x_train[2]) == colours["ant"]
    assert colour_of(ds.x_test[1]) == colours["ant"]


def test_val_is_preferred_and_test_is_used_without_it(tmp_path):
    write_image_folder(tmp_path / "a", ["x", "y"], n_train=1, n_test=3, size=(4, 4), test_folder="test")
    assert len(load(tmp_path / "a", image_size=4, normalize=False).x_test) == 6
    write_image_folder(tmp_path / "a", ["x", "y"], n_train=1, n_test=1, size=(4, 4), test_folder="val")
    assert len(load(tmp_path / "a", image_size=4, normalize=False).x_test) == 2


def test_default_image_size_is_224(tmp_path):
    write_image_folder(tmp_path, ["a"], n_train=1, n_test=1, size=(300, 250))
    ds = load(tmp_path, normalize=False)
    assert ds.input_shape == (3, 224, 224)


# ---------------------------------------------------------------------------------------------
# Normalisation


def test_imagenet_statistics_are_applied_exactly(tmp_path):
    colours = write_image_folder(tmp_path, ["a", "b"], n_train=1, n_test=1, size=(4, 4))
    ds = load(tmp_path, image_size=4, normalize_stats="imagenet")
    assert ds.mean == IMAGENET_MEAN and ds.std == IMAGENET_STD
    for c in range(3):
        want = (colours["b"][c] / 255 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        assert ds.x_train[1, c, 0, 0].item() == pytest.approx(want, abs=1e-6)


def test_train_statistics_standardise_the_training_split(tmp_path):
    colours = write_image_folder(tmp_path, ["a", "b"], n_train=2, n_test=1, size=(4, 4))
    ds = load(tmp_path, image_size=4)
    a, b = (np.array(colours[k]) / 255 for k in ("a", "b"))
    assert ds.mean == pytest.approx(tuple((a + b) / 2))
    assert ds.std == pytest.approx(tuple(np.abs(a - b) / 2))
    per_channel = ds.x_train.transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(per_channel.mean(1), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(per_channel.std(1, correction=0), torch.ones(3), atol=1e-5, rtol=0)


def test_imagenet_statistics_need_rgb_images():
    with pytest.raises(ValueError, match="RGB images"):
        load_dataset(DataConfig(name="digits", normalize_stats="imagenet"))


# ---------------------------------------------------------------------------------------------
# Errors name the fault and the fix


def test_no_path():
    with pytest.raises(ValueError, match=r"set data\.path"):
        load_dataset(DataConfig(name="image_folder"))


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"not found.*train/<class>"):
        read_image_folder(tmp_path / "nope", 8)


def test_missing_train_and_test_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="no train/ folder"):
        read_image_folder(tmp_path, 8)
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no val/ or test/ folder"):
        read_image_folder(tmp_path, 8)


def test_no_class_folders(tmp_path):
    write_image(tmp_path / "train" / "flat.png", np.zeros((4, 4, 3), dtype=np.uint8))
    (tmp_path / "val").mkdir()
    with pytest.raises(ValueError, match=r"train holds no class folders"):
        read_image_folder(tmp_path, 4)


def test_flat_validation_folder_says_to_sort_it(tmp_path):
    write_image_folder(tmp_path, ["a"], n_train=1, n_test=0, size=(4, 4))
    write_image(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG", np.zeros((4, 4, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"one folder per class.*flat folder"):
        read_image_folder(tmp_path, 4)


def test_empty_class_folder(tmp_path):
    write_image_folder(tmp_path, ["a", "b"], n_train=1, n_test=1, size=(4, 4))
    for f in (tmp_path / "train" / "b").iterdir():
        f.unlink()
    (tmp_path / "train" / "b" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"train/b hold no jpg/jpeg/png images"):
        read_image_folder(tmp_path, 4)


def test_unreadable_image_names_the_file(tmp_path):
    write_image_folder(tmp_path, ["a"], n_train=2, n_test=1, size=(4, 4))
    bad = tmp_path / "train" / "a" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ValueError, match=r"cannot read image .*broken\.jpg.*replace or delete"):
        read_image_folder(tmp_path, 4)


def test_truncated_png_names_the_file(tmp_path):
    write_image_folder(tmp_path, ["a"], n_train=1, n_test=1, size=(4, 4))
    good = write_image(tmp_path / "val" / "a" / "big.png", np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    good.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"val/a/big\.png"):
        read_image_folder(tmp_path, 4)


def test_mismatched_class_folders(tmp_path):
    write_image_folder(tmp_path, ["a", "b"], n_train=1, n_test=0, size=(4, 4))
    write_image_folder(tmp_path, ["a", "c"], n_train=0, n_test=1, size=(4, 4))
    with pytest.raises(ValueError, match=r"only in train/: b; only in val/: c.*data\.classes"):
        read_image_folder(tmp_path, 4)
    # naming the shared classes is the fix
    assert read_image_folder(tmp_path, 4, ["a"]).num_classes == 1


def test_listed_class_missing(tmp_path):
    write_image_folder(tmp_path, ["a", "b"], n_train=1, n_test=1, size=(4, 4))
    with pytest.raises(FileNotFoundError, match=r"train lacks class folder\(s\) n01440764"):
        read_image_folder(tmp_path, 4, ["a", "n01440764"])


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"name": "cifar10", "image_size": 64}, "image_folder reader only"),
        ({"name": "cifar10", "classes": ["a"]}, "image_folder reader only"),
        ({"name": "image_folder", "classes": []}, "data.classes is empty"),
        ({"name": "image_folder", "classes": ["a", "a"]}, "repeats"),
        ({"name": "image_folder", "image_size": 0}, "greater than 0"),
    ],
)
def test_config_refuses_image_folder_options_that_cannot_apply(fields, match):
    with pytest.raises(ValidationError, match=match):
        DataConfig(**fields)
