"""TrainConfig: the schema every CLI, file and sweep goes through."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from study.config import CHOICES, ConfigError, TrainConfig, coerce, field_names
from train import field_help


def test_defaults_are_valid_and_round_trip():
    cfg = TrainConfig()
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_strings_from_cli_and_yaml_are_coerced():
    cfg = TrainConfig.from_dict({"epochs": "3", "dsconv": "true", "lr": "1e-3", "batch_norm": "off",
                                 "label_smoothing": 0})
    assert (cfg.epochs, cfg.dsconv, cfg.lr, cfg.batch_norm, cfg.label_smoothing) == (3, True, 1e-3, False, 0.0)


@pytest.mark.parametrize("values, words", [
    ({"epochz": 3}, ["unknown config key", "epochz", "valid keys", "epochs"]),
    ({"epochs": "three"}, ["epochs", "expected int"]),
    ({"epochs": 2.5}, ["epochs", "expected int"]),
    ({"dsconv": "maybe"}, ["dsconv", "true/false"]),
    ({"lr": True}, ["lr", "expected float"]),
    ({"attention": "spatial"}, ["attention", "none, simple, channel, eca, cbam"]),
    ({"model": "vgg16"}, ["model", "resnet18"]),
    ({"dataset": "mnist"}, ["dataset", "fashion-mnist", "imagefolder:PATH"]),
    ({"dataset": "imagefolder:"}, ["imagefolder", "needs a path"]),
    ({"epochs": 0}, ["epochs", "> 0"]),
    ({"dropout": 1.0}, ["dropout", "[0, 1)"]),
    ({"dropout": -0.5}, ["dropout", "[0, 1)", "-1"]),
    ({"finetune_lr": -1e-3}, ["finetune_lr", ">= 0"]),
    ({"model": "resnet18", "pretrained": True}, ["stem=cifar", "conv1", "stem=imagenet", "fresh_stem=true"]),
    ({"model": "resnet18", "fresh_stem": True}, ["fresh_stem", "pretrained=true"]),
    ({"pretrained": True}, ["pretrained", "ResNet"]),
    ({"model": "resnet18", "freeze": "backbone"}, ["freeze", "pretrained"]),
    ({"warmup_epochs": 5, "epochs": 5}, ["warmup_epochs", "< epochs"]),
])
def test_bad_values_name_the_key_and_the_choices(values, words):
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict(values)
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_dropout_sentinel_resolves_to_the_model_familys_default():
    assert TrainConfig().dropout == -1 and TrainConfig().resolved_dropout == 0.5
    assert TrainConfig(model="resnet50").resolved_dropout == 0.0
    assert TrainConfig(model="resnet50", dropout=0.3).resolved_dropout == 0.3


def test_config_is_frozen():
    with pytest.raises(Exception):
        TrainConfig().epochs = 3  # type: ignore[misc]


def test_yaml_and_json_files_with_overrides(tmp_path):
    (tmp_path / "a.yaml").write_text("epochs: 4\nactivation: silu\n")
    (tmp_path / "b.json").write_text(json.dumps({"epochs": 2, "dsconv": True}))
    assert TrainConfig.from_file(tmp_path / "a.yaml", {"epochs": "7"}).epochs == 7
    assert TrainConfig.from_file(tmp_path / "a.yaml").activation == "silu"
    assert TrainConfig.from_file(tmp_path / "b.json").dsconv is True


@pytest.mark.parametrize("text, words", [
    ("- a\n- b\n", ["mapping", "list"]),
    ("epochs: [1\n", ["not valid YAML"]),
    ("!!python/object/apply:os.system ['true']\n", ["not valid YAML"]),  # safe_load refuses tags
])
def test_bad_files(tmp_path, text, words):
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_file(tmp_path / "c.yaml")
    for word in words:
        assert word in str(err.value)


def test_missing_file():
    with pytest.raises(ConfigError, match="cannot read config file"):
        TrainConfig.from_file("/nonexistent/x.yaml")


def test_data_dir_is_absolute_and_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ABLATION_DATA_DIR", str(tmp_path / "cache"))
    assert TrainConfig().resolved_data_dir == str(tmp_path / "cache")
    monkeypatch.chdir(tmp_path)
    assert TrainConfig(data_dir="rel").resolved_data_dir == str(tmp_path / "rel")


def test_every_field_is_documented_for_help():
    helps = field_help()
    assert set(helps) == set(field_names())
    assert all(text.strip() for text in helps.values())


def test_every_choice_field_exists():
    assert set(CHOICES) <= set(field_names())


def test_the_schema_imports_neither_torch_nor_the_models_it_names():
    """models/ imports the schema (MODEL_NAMES among it), so the schema importing models/ would be a cycle."""
    code = ("import sys, study.config\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'models'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent).stdout
    assert out.strip() == "[]"


def test_coerce_accepts_integral_floats_for_ints():
    assert coerce("epochs", 3.0, "int") == 3
