"""A user's own network (models/user.py): the factory contract, its toggles as knobs, the errors in
its code as one line naming file and line, and the example (examples/tinycnn.py) through sweep,
report, re-run and export on real Fashion-MNIST."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from models import create_model
from models.user import UserModelError, load, resolved
from study.config import ConfigError, TrainConfig
from tests.helpers import needs_fashion_mnist, plan

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "tinycnn.py"
ENV = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def user_file(tmp_path: Path, body: str, name: str = "net.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def config(model: str, **values) -> TrainConfig:
    return resolved(TrainConfig.from_dict({"model": model, "dataset": "synthetic", **values}))


def test_toggles_are_filled_in_with_the_factory_defaults_and_coerced_to_their_types():
    cfg = config(f"{EXAMPLE}:tinycnn", depth="3")
    assert dict(cfg.toggles) == {"depth": 3, "norm": "bn", "base": 16}
    assert cfg.to_dict()["depth"] == 3 and TrainConfig.from_dict(cfg.to_dict()) == cfg  # flat, round trip
    assert hash(cfg) == hash(config(f"{EXAMPLE}:tinycnn", depth=3))  # trials dedup as before
    assert create_model(cfg, 10)(__import__("torch").zeros(2, 3, 32, 32)).shape == (2, 10)
    relative = config(f"{os.path.relpath(EXAMPLE)}:tinycnn")
    assert relative.model == f"{EXAMPLE}:tinycnn"  # absolute: Ray trials run in a directory of their own


@pytest.mark.parametrize("values, message", [
    ({"depth": 5}, "depth=5 is not one of tinycnn's declared values: 1, 2, 3"),
    ({"depht": 2}, "depht is neither a knob nor a toggle of tinycnn"),
    ({"depth": "deep"}, "depth='deep' has the wrong type: expected int"),
    ({"attention": "cbam"}, "attention='cbam' is a knob of the built-in networks"),
])
def test_a_toggle_that_does_not_fit_the_factory_is_one_line(values, message):
    with pytest.raises(ConfigError, match=message):
        config(f"{EXAMPLE}:tinycnn", **values)


def test_a_recipe_applies_its_training_knobs_to_a_user_model_and_smoke_limits_leave_it_alone():
    from sweep.planning.configs import trial_config

    cfg = trial_config({"model": f"{EXAMPLE}:tinycnn", "recipe": "holistic", "dataset": "synthetic"})
    assert cfg.label_smoothing > 0 and cfg.init == "default"  # the recipe's network parts are not its to set
    with pytest.raises(ConfigError, match="init='kaiming' is a knob of the built-in networks"):
        trial_config({"model": f"{EXAMPLE}:tinycnn", "recipe": "holistic", "init": "kaiming"})
    from study.trial import smoke_limits, trial_values

    assert smoke_limits(trial_values({"model": "squeezenet_zoo.nets:f"}))["width"] == 1.0  # not SqueezeNet's cap


def test_built_in_models_still_refuse_unknown_keys():
    with pytest.raises(ConfigError, match="unknown config key"):
        TrainConfig.from_dict({"model": "squeezenet", "depth": 2})


@pytest.mark.parametrize("body, message", [
    ("import torch\nx = 1 +\n", r"net\.py:2"),  # a syntax error, at its line
    ("import torch\nraise RuntimeError('no GPU here')\n", r"net\.py:2: importing .* raised RuntimeError: no GPU here"),
    ("def f(num_classes, **rest):\n    pass\n", r"net\.py:1: f takes \*\*rest"),
    ("def f(num_classes, lr=0.1):\n    pass\n", r"net\.py:1: f's toggle lr is named like a built-in knob"),
    ("def f(num_classes, depth=None):\n    pass\n", r"net\.py:1: f's toggle depth=None"),
    ("def f(depth=2):\n    pass\n", r"net\.py:1: f must take the number of classes"),
    ("def f(num_classes, depth=2):\n    pass\nf.toggles = {'depth': [3, 4]}\n", r"defaults to 2, which is not among"),
    ("g = 1\n", r"net\.py: has no f"),
])
def test_a_factory_that_breaks_the_contract_is_one_line_naming_its_file(tmp_path, body, message):
    path = user_file(tmp_path, body)
    with pytest.raises(UserModelError, match=message):
        load(f"{path}:f")


def test_errors_while_building_or_running_the_network_name_the_users_line(tmp_path):
    from training.datasets import dataset_sizes
    from training.preflight import check_trial

    path = user_file(tmp_path, """\
        import torch
        from torch import nn

        def raising(num_classes, depth=2):
            raise ValueError(f"depth {depth} is too deep")

        def wrong(num_classes):
            return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, num_classes + 1))

        def not_a_module(num_classes):
            return 42

        class Odd(nn.Module):
            def forward(self, x):
                return x.view(7, -1)

        def odd(num_classes):
            return Odd()
        """)
    sizes = dataset_sizes("synthetic")
    with pytest.raises(UserModelError, match=r"net\.py:5: raising\(10, depth=2\) raised ValueError: depth 2"):
        check_trial(config(f"{path}:raising"), sizes)
    with pytest.raises(UserModelError, match=r"net\.py:7: wrong's network returned shape \[2, 11\] .*\[2, 10\]"):
        check_trial(config(f"{path}:wrong"), sizes)
    with pytest.raises(UserModelError, match=r"net\.py:10: not_a_module\(10\) returned a int"):
        check_trial(config(f"{path}:not_a_module"), sizes)
    with pytest.raises(UserModelError, match=r"net\.py:15: odd's network on a batch .* raised RuntimeError"):
        check_trial(config(f"{path}:odd"), sizes)


def test_train_py_refuses_a_bad_toggle_in_one_line(tmp_path):
    out = subprocess.run([sys.executable, "train.py", "--model", f"{EXAMPLE}:tinycnn", "--set", "depth=9",
                          "--dataset", "synthetic", "--out-dir", str(tmp_path / "run")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0, out.stderr
    assert "depth=9 is not one of tinycnn's declared values" in out.stderr and not (tmp_path / "run").exists()


def test_a_module_reference_imports_from_pythonpath_and_needs_nothing_of_this_project(tmp_path):
    package = tmp_path / "mynets"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "conv.py").write_text(EXAMPLE.read_text())
    env = {**ENV, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}
    out = subprocess.run([sys.executable, "train.py", "--model", "mynets.conv:tinycnn", "--set", "depth=1",
                          "--dataset", "synthetic", "--subset", "64", "--batch-size", "16", "--epochs", "1",
                          "--measure-latency", "false", "--out-dir", str(tmp_path / "run"), "--quiet"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["config"]
    resumed = subprocess.run([sys.executable, "train.py", "--resume", str(tmp_path / "run"), "--set", "depth=2"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 2 and "--depth would change it" in resumed.stderr, resumed.stderr
    assert recorded["model"] == "mynets.conv:tinycnn" and recorded["depth"] == 1 and recorded["norm"] == "bn"
    missing = subprocess.run([sys.executable, "train.py", "--model", "nosuch.nets:tinycnn", "--dataset", "synthetic"],
                             cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "no module nosuch" in missing.stderr


def test_a_space_checks_toggles_against_the_factory_before_anything_runs(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(f"params:\n  model: {EXAMPLE}:tinycnn\n  depth: {{grid: [1, '2']}}\n  dataset: synthetic\n")
    params, _, record = plan(["--space", str(space), "--storage-path", str(tmp_path), "--set", "norm=gn"])
    assert params["depth"] == {"grid": [1, 2]} and params["norm"] == "gn"
    assert record["reference_levels"] == {"depth": 2, "norm": "bn", "base": 16}
    for bad, message in ((["--set", "norm=ln"], "norm='ln' is not one of the model's declared values"),
                         (["--set", "nrm=gn"], "'nrm' is neither a TrainConfig field nor a bundle")):
        with pytest.raises(ConfigError, match=message):
            plan(["--space", str(space), "--storage-path", str(tmp_path), *bad])


@pytest.mark.slow
@needs_fashion_mnist()
def test_the_example_goes_through_sweep_report_rerun_and_export_on_fashion_mnist(tmp_path):
    """One command each, as README shows them: the example space (shortened), the report with the
    effects of the toggles against the factory's defaults, train.py --config TRIAL_DIR, the export."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    def run(*argv: str, timeout: int = 900) -> subprocess.CompletedProcess:
        out = subprocess.run([sys.executable, *argv], cwd=ROOT, env=ENV, capture_output=True, text=True,
                             timeout=timeout)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        return out

    run("sweep/run.py", "--space", "examples/tinycnn.yaml", "--set", "subset=600", "epochs=3",
        "measure_latency=false", "--samples", "2", "--confirm-top", "2", "--confirm-seeds", "2",
        "--max-seeds", "2", "--address", "local", "--storage-path", str(tmp_path), "--name", "mine")
    experiment = tmp_path / "mine"
    run("sweep/run.py", "--resume", str(experiment), "--address", "local")  # its recorded toggle axes check again
    sweep = json.loads((experiment / "sweep.json").read_text())
    assert sweep["reference_levels"] == {"depth": 2, "norm": "bn", "base": 16}
    confirm = json.loads((experiment / "sweep.json").read_text())["phases"]["confirm"]
    assert confirm["references"] == {"depth": 2, "norm": "bn"}  # the factory's defaults, not the grid's order
    trial = next(p.parent for p in (experiment / "confirm").glob("*/result.json"))
    recorded = json.loads((trial / "trial_config.json").read_text())["config"]
    assert recorded["model"] == f"{EXAMPLE}:tinycnn" and {"depth", "norm", "base"} <= set(recorded)
    events = EventAccumulator(str(trial))
    events.Reload()
    start = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    assert hparams["depth"].number_value == recorded["depth"] and hparams["norm"].string_value == recorded["norm"]

    run("-m", "analysis.report", str(experiment), "--out", str(tmp_path / "report"))
    trials = __import__("pandas").read_csv(tmp_path / "report" / "trials.csv")
    assert {"depth", "norm"} <= set(trials.columns) and set(trials["depth"]) == {1, 2}
    report = (tmp_path / "report" / "report.md").read_text()
    assert "depth=2, norm=bn" in report

    last = json.loads((trial / "result.json").read_text().splitlines()[-1])
    rerun = tmp_path / "rerun"
    run("train.py", "--config", str(trial), "--out-dir", str(rerun), "--quiet")
    assert json.loads((rerun / "summary.json").read_text())["test_acc"] == pytest.approx(last["test_acc"], abs=1e-6)

    out = run("-m", "deploy.export", str(experiment), "--best", "--out", str(tmp_path / "export"))
    assert "ONNX int8" in out.stdout and list((tmp_path / "export").glob("*/model.onnx"))
