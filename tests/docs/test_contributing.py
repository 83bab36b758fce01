"""CONTRIBUTING.md's worked examples, run as written: a dataset, a mask source and a stage kind, each one new module
and one registry line (registered here at run time, as a notebook would)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from lmc_core.data.dataset import load_dataset
from lmc_core.data.registry import DATASETS
from lmc_core.foundations.config import DataConfig
from lmc_core.foundations.layout import copies_key, mask_key, parse_key
from lmc_core.foundations.registry import Registry
from lmc_core.prune.magnitude import dense_masks, round_sparsity, sparsity
from lmc_core.prune.sources import MASK_SOURCES
from lmc_core.studies.presets import merge
from lmc_core.studies.run import Run
from lmc_core.studies.stages import STAGE_KINDS
from lmc_core.studies.validation import validate_config

DOC = Path(__file__).resolve().parents[2] / "CONTRIBUTING.md"
BLOCK = re.compile(r"```python\n# (?P<path>lmc_core/\S+\.py)\n(?P<code>.*?)```", re.S)
LINE = re.compile(r'```text\n\s*"(?P<name>\w+)": "(?P<module>[\w.]+):(?P<attr>\w+)",\n```')


def examples() -> dict[str, tuple[str, str, str]]:
    """Return {registry name: (file path, code, attribute)} for every worked example, checking the line matches the file."""
    text = DOC.read_text()
    blocks = list(BLOCK.finditer(text))
    lines = list(LINE.finditer(text))
    assert len(blocks) == len(lines) == 3, "each example is one module block followed by its registry line"
    out = {}
    for block, line in zip(blocks, lines, strict=True):
        module_path = line["module"].replace(".", "/") + ".py"
        assert module_path == block["path"], f"the registry line names {module_path}, the block is {block['path']}"
        out[line["name"]] = (block["path"], block["code"], line["attr"])
    return out


EXAMPLES = examples()


def load_example(name: str, tmp_path: Path) -> tuple[ModuleType, str]:
    """Write example `name` to a file and import it under a private module name; return (module, attribute)."""
    path, code, attr = EXAMPLES[name]
    file = tmp_path / Path(path).name
    file.write_text(code)
    spec = importlib.util.spec_from_file_location(f"contributing_{name}", file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module, attr


def register(monkeypatch: pytest.MonkeyPatch, registry: Registry, name: str, entry: object) -> None:
    """Register `entry` for this test only: the registry's run-time entries are restored afterwards."""
    monkeypatch.setattr(registry, "_loaded", dict(registry._loaded))
    registry.register(name)(entry)


TINY = {
    "data": {"name": "teacher"},
    "model": {"arch": "mlp", "hidden": [16]},
    "train": {"lr": 0.05, "batch_size": 100, "epochs": 1, "schedule": "constant"},
    "pruning": {"mask_sources": ["dense"], "rounds": 2, "rate": 0.5, "rewind_steps": [0]},
    "stability": {"pairs": [[1, 2]], "alphas": 3, "splits": ["test"]},
}


def test_dataset_example_loads_balanced_xor(monkeypatch, tmp_path):
    module, attr = load_example("xor", tmp_path)
    register(monkeypatch, DATASETS, "xor", getattr(module, attr))
    ds = load_dataset(DataConfig(name="xor"))
    assert ds.x_train.shape == (800, 2) and ds.x_test.shape == (200, 2) and ds.num_classes == 2
    # the normalisation the config asks for applies to a registered loader too (one channel for vector data)
    assert len(ds.mean) == 1 and abs(float(ds.x_train.mean())) < 1e-5 and abs(float(ds.x_train.std()) - 1) < 1e-3
    # the XOR rule: class 1 exactly where the blob centres' signs differ, so both classes are present
    assert 0.35 < ds.y_train.float().mean() < 0.65


def test_mask_source_example_prunes_the_init_by_magnitude(monkeypatch, tmp_path):
    module, attr = load_example("init_magnitude", tmp_path)
    register(monkeypatch, MASK_SOURCES, "init_magnitude", getattr(module, attr))
    cfg = validate_config(merge(TINY, {"pruning": {"mask_sources": ["dense", "init_magnitude"]}}))
    run = Run(cfg, tmp_path / "runs")
    rows = run.run()
    init = run.load_state("init")
    r1 = run.load_masks("init_magnitude-k0-r1")
    r2 = run.load_masks("init_magnitude-k0-r2")
    # exact global counts: 50 % then 75 % of the prunable weights removed
    assert sparsity(r1) == pytest.approx(round_sparsity(0.5, 1)) and sparsity(r2) == pytest.approx(round_sparsity(0.5, 2))
    # round 1 keeps exactly the largest |theta_0| over all prunable layers (computed here by hand)
    names = list(dense_masks(run.template))
    magnitudes = torch.cat([init[n].abs().flatten() for n in names])
    kept = int(sum(r1[n].sum() for n in names))
    threshold = magnitudes.sort(descending=True).values[kept - 1]
    for n in names:
        assert torch.equal(r1[n], init[n].abs() >= threshold), n
        assert not (r2[n] & ~r1[n]).any(), "round 2 prunes within round 1's mask"
    ours = [r for r in rows if r["source"] == "init_magnitude"]
    assert [r["round"] for r in ours] == [0, 1, 2] and all(r["training_points"] == 0 for r in ours)
    assert run.stage_info(mask_key("init_magnitude-k0-r2"))["examples"] == 0


def test_stage_kind_example_measures_the_distance_between_copies(monkeypatch, tmp_path):
    module, attr = load_example("distance", tmp_path)
    register(monkeypatch, STAGE_KINDS, "distance", getattr(module, attr))
    run = Run(validate_config(TINY), tmp_path / "runs")
    planned = [s for s in run.stages if s.kind == "distance"]
    assert {s.key for s in planned} == {"distance/dense/k0/p0"}  # analysis selects every tested round: only dense here
    run.run()
    info = run.stage_info("distance/dense/k0/p0")
    a, b = run.load_state(copies_key("dense", 0, 0), "a"), run.load_state(copies_key("dense", 0, 0), "b")
    params = [n for n, _ in run.template.named_parameters()]
    by_hand = torch.sqrt(sum(((a[n].double() - b[n].double()) ** 2).sum() for n in params))
    assert info["distance"] == pytest.approx(float(by_hand), rel=1e-12) and info["distance"] > 0
    assert info["parameters"] == sum(p.numel() for p in run.template.parameters())
    ref = parse_key("distance/dense/k0/p0")
    assert (ref.kind, ref.mask, ref.k, ref.pair) == ("distance", "dense", 0, 0)
