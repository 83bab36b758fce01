import json

import pytest
from pydantic import ValidationError

from lmc_core.foundations.config import StudyConfig
from lmc_core.studies.presets import PRESETS, preset
from lmc_core.studies.validation import load_config, validate_config


def field_paths(err: ValidationError) -> list[str]:
    return [".".join(str(x) for x in e["loc"]) for e in err.errors()]


def test_json_round_trip_preserves_config_and_run_id():
    cfg = preset("mnist1d")
    again = StudyConfig.model_validate_json(cfg.model_dump_json())
    assert again == cfg and again.run_id() == cfg.run_id()


def test_run_id_ignores_label_and_device_but_not_science():
    cfg = preset("smoke")
    assert cfg.model_copy(update={"name": "other", "device": "cpu"}).run_id() == cfg.run_id()
    changed = preset("smoke", {"train": {"lr": 0.05}})
    assert changed.run_id() != cfg.run_id()


@pytest.mark.parametrize(
    "overrides, path",
    [
        ({"train": {"lr": -1}}, "train.lr"),
        ({"train": {"lrr": 0.1}}, "train.lrr"),
        ({"pruning": {"rate": 1.5}}, "pruning.rate"),
        ({"stability": {"pairs": [[3, 3]]}}, "stability.pairs"),
        ({"stability": {"alphas": 1}}, "stability.alphas"),
        ({"data": {"augmentation": "mixup"}}, "data.augmentation"),
        ({"model": {"norm": "layer"}}, "model.norm"),
    ],
)
def test_validation_errors_name_the_field(overrides, path):
    with pytest.raises(ValidationError) as info:
        preset("smoke", overrides)
    assert path in field_paths(info.value)


def test_nesterov_needs_sgd_with_momentum():
    with pytest.raises(ValidationError, match="nesterov"):
        StudyConfig.model_validate({"train": {"optimizer": "adam", "nesterov": True}})


def test_every_preset_validates_and_has_a_description():
    for name, spec in PRESETS.items():
        assert spec["description"]
        assert preset(name).name == name


def test_unknown_preset_names_the_available_ones():
    with pytest.raises(KeyError, match="smoke"):
        preset("nope")


def test_json_schema_is_generated():
    schema = StudyConfig.model_json_schema()
    assert "train" in schema["properties"]
    assert json.dumps(schema)


def test_load_config_from_yaml_and_json(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("name: mine\ntrain:\n  lr: 0.02\n  epochs: 3\n")
    assert load_config(str(y)).train.lr == 0.02
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"train": {"epochs": 2}}))
    assert load_config(str(j)).train.epochs == 2
    with pytest.raises(FileNotFoundError, match="preset"):
        load_config(str(tmp_path / "missing.yaml"))


def test_unknown_mask_source_lists_registered_ones():
    with pytest.raises(ValidationError, match="registered") as info:
        preset("smoke", {"pruning": {"mask_sources": ["dense", "magic"]}})
    assert "pruning.mask_sources" in field_paths(info.value)


def test_config_files_of_the_wrong_kind_or_broken_syntax_are_named(tmp_path):
    md = tmp_path / "notes.md"
    md.write_text("# not a config")
    with pytest.raises(ValueError, match=r"\.json or \.yaml"):
        load_config(str(md))
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1,\n")
    with pytest.raises(ValueError, match=r"broken\.yaml: not valid YAML"):
        load_config(str(broken))


def test_unknown_dataset_fails_validation_not_a_worker():
    # The config is pure data; the registry check happens in validate_config, which the API and the CLI call.
    assert StudyConfig.model_validate({"data": {"name": "imagenet"}}).data.name == "imagenet"
    with pytest.raises(ValidationError, match="unknown dataset 'imagenet'") as info:
        validate_config({"data": {"name": "imagenet"}})
    assert field_paths(info.value) == ["data.name"]


def test_a_source_that_cannot_run_is_named_with_its_problem():
    with pytest.raises(ValidationError, match="no synthetic set named 'dm'") as info:
        validate_config({"pruning": {"mask_sources": ["dense", "distilled.dm"]}})
    assert field_paths(info.value) == ["pruning.mask_sources"]


def test_interpolated_batchnorm_on_a_random_plane_is_refused_before_any_work():
    bn = {"model": {"arch": "convnet", "norm": "batch"}, "stability": {"bn_mode": "interpolate"}}
    with pytest.raises(ValidationError, match="a random plane does not move BatchNorm statistics"):
        StudyConfig.model_validate({**bn, "analysis": {"surface": {"plane": "random"}}})
    StudyConfig.model_validate({**bn, "analysis": {"surface": {"plane": "copies"}}})  # the copies plane moves them
    StudyConfig.model_validate({"stability": {"bn_mode": "interpolate"}, "analysis": {"surface": {"plane": "random"}}})  # no BN
