"""The `paper-imagenet10` preset (ImageNet ResNet-10 on ImageNet-10), end to end on a tiny generated image folder.

The full protocol needs a GPU and the user's ImageNet; here the preset must carry the paper's recipe, and, scaled
down (32 x 32 images, one round, one epoch) over a folder that holds ImageNet-10's wnids plus a class the preset
leaves out, it must read the images in the preset's label order, normalise them with ImageNet's statistics (the
imported raw set too), and prune to exactly 20 % of the ImageNet ResNet-10's weights.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from lmc_core.data.dataset import IMAGENET_MEAN, IMAGENET_STD
from lmc_core.distill.synthetic import decode
from lmc_core.foundations.layout import mask_key
from lmc_core.studies.plan import plan
from lmc_core.studies.presets import IMAGENET10_WNIDS, PRESETS, preset
from lmc_core.studies.run import Run
from tests.helpers.image_folders import write_image_folder

# ImageNet ResNet-10's prunable weights: 4,900,032 conv weights (tests/core/test_models.py) + the 512 x 10 classifier.
PRUNABLE = 4_900_032 + 512 * 10
N_TRAIN, N_TEST, SIZE = 4, 2, 32  # subset.idc10 draws 4 real images per class (1 stored x 2 x 2 tiles)


def test_preset_carries_the_papers_imagenet10_recipe():
    cfg = preset("paper-imagenet10")
    assert cfg.data.name == "image_folder" and cfg.data.classes == IMAGENET10_WNIDS
    assert IMAGENET10_WNIDS[:3] == ["n02869837", "n01749939", "n02488291"]  # class100.txt's order, not sorted
    assert (cfg.data.image_size, cfg.data.normalize, cfg.data.normalize_stats) == (224, True, "imagenet")
    assert (cfg.model.arch, cfg.model.norm) == ("resnet10_imagenet", "batch")
    t = cfg.train
    assert (t.lr, t.momentum, t.weight_decay, t.batch_size, t.epochs) == (0.01, 0.9, 5e-4, 64, 300)
    assert (t.schedule, t.milestones, t.gamma, t.cutmix) == ("multistep", [200, 250], 0.2, 1.0)
    p = cfg.pruning
    assert (p.rounds, p.rate, p.rewind_steps, p.rewind) == (10, 0.2, [0], "weights")
    assert set(p.mask_sources) == {"dense", "imp", "distilled.idc10", "subset.idc10", "random"}
    assert (cfg.stability.alphas, cfg.stability.rounds) == (11, [0, 4, 9])
    idc = cfg.synthetic.sets["idc10"]
    assert (idc.method, idc.ipc, idc.factor) == ("dc", 10, 2)
    # IDC's ipc_epoch rule on the decoded images per class (10 x 2 x 2 = 40 <= 50): 1500 epochs, x0.2 at 2/3 and 5/6
    st = cfg.synthetic.train
    assert (st.epochs, st.milestones, st.cutmix) == (1500, [1000, 1250], 1.0)
    assert "GPU" in PRESETS["paper-imagenet10"]["description"]
    assert plan(cfg)


def test_without_the_folder_the_data_load_names_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = Run(preset("paper-imagenet10"), root=tmp_path / "runs")
    with pytest.raises(FileNotFoundError, match=re.escape(str((tmp_path / "data" / "imagenet").resolve()))):
        run.data  # noqa: B018 - the cached property loads the data
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_scaled_down_paper_imagenet10_runs_end_to_end(tmp_path):
    root = tmp_path / "imagenet"
    extra = "n99999999"  # present in the folder, absent from ImageNet-10: must be left out
    colours = write_image_folder(root, [*IMAGENET10_WNIDS, extra], N_TRAIN, N_TEST, size=(40, 48))
    # An IDC-style file to import: raw [0, 1] images, one stored image per class holding 2 x 2 tiles (factor 2).
    rng = np.random.default_rng(0)
    syn = tmp_path / "idc_imagenet10.npz"
    stored = rng.uniform(0.2, 0.8, size=(10, 3, SIZE, SIZE)).astype(np.float32)
    np.savez(syn, images=stored, labels=np.arange(10))
    overrides = {
        "data": {"path": str(root), "image_size": SIZE},
        "train": {"epochs": 1, "batch_size": 16, "eval_batch_size": 64},
        "pruning": {"rounds": 1},
        "stability": {"alphas": 3, "rounds": [0, 1]},
        "synthetic": {
            "sets": {"idc10": {"method": "import", "path": str(syn), "ipc": 1, "factor": 2, "space": "raw"}},
            "train": {"epochs": 1, "batch_size": 8},
            "evaluate_runs": 0,
        },
        "device": "cpu",
    }
    run = Run(preset("paper-imagenet10", overrides), root=tmp_path / "runs")

    data = run.data
    assert data.x_train.shape == (10 * N_TRAIN, 3, SIZE, SIZE) and data.x_test.shape == (10 * N_TEST, 3, SIZE, SIZE)
    assert data.num_classes == 10
    mean = torch.tensor(IMAGENET_MEAN).reshape(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).reshape(3, 1, 1)
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        for xi, yi in zip(x, y, strict=True):
            # label i is the preset's i-th wnid (class100.txt order, not sorted), pixels back through ImageNet's statistics
            want = torch.tensor(colours[IMAGENET10_WNIDS[int(yi)]], dtype=torch.float32).reshape(3, 1, 1) / 255
            torch.testing.assert_close(xi * std + mean, want.expand(3, SIZE, SIZE), atol=1e-6, rtol=0)
    assert data.y_train.tolist() == [c for c in range(10) for _ in range(N_TRAIN)]

    rows = run.run()
    assert {r["source"] for r in rows} == {"dense", "imp", "distilled.idc10", "subset.idc10", "random"}
    for r in rows:
        # 20 % of 4,905,152 weights is not whole: round 1 keeps round(0.8 x 4,905,152) = 3,924,122 of them
        assert r["sparsity"] == pytest.approx(0.0 if r["round"] == 0 else 100 * (1 - 3_924_122 / PRUNABLE), abs=1e-9)
        assert math.isfinite(r["error_barrier"]) and math.isfinite(r["loss_barrier"])
    for source in ("imp", "distilled.idc10", "subset.idc10", "random"):
        masks = run.load_masks(f"{source}-k0-r1")
        assert (run.stage_dir(mask_key(f"{source}-k0-r1"))).is_dir()
        assert sum(m.numel() for m in masks.values()) == PRUNABLE
        assert sum(int(m.sum()) for m in masks.values()) == 3_924_122 == round(0.8 * PRUNABLE)
        assert set(masks) >= {"stem.weight", "fc.weight", "stages.3.0.shortcut.0.weight"}

    # The imported raw set is decoded (2 x 2 tiles, each upsampled to 32 x 32) and normalised with ImageNet's statistics,
    # as the real images are (the folder's own statistics would differ: its images are flat class colours).
    syn_set = run.synthetic_dataset("idc10")
    assert syn_set.x_train.shape == (10 * 4, 3, SIZE, SIZE)
    assert syn_set.y_train.tolist() == [c for c in range(10) for _ in range(4)]
    want = (decode(torch.from_numpy(stored), 2, "image") - mean) / std
    torch.testing.assert_close(syn_set.x_train, want, atol=1e-5, rtol=0)
