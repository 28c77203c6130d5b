"""A user's own network (models/user.py): the factory contract, its toggles as knobs, the errors in
its code as one line naming file and line, and the example (examples/tinycnn.py) through sweep,
report, re-run and export on real Fashion-MNIST."""
from __future__ import annotations

import dataclasses
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
    ("def f(num_classes, depth=None):\n    pass\nf.toggles = {'depth': [1]}\n",
     r"net\.py:1: f\.toggles names depth, whose default None is not a bool, int, float or string"),
    ("def f(size, width, depth=2):\n    pass\n", r"net\.py:1: f\(size, width, depth=2\): it takes no num_classes, "
     r"so the number of classes would go to size, and size, width have no defaults; its toggles: depth; add to "
     r"\S*net\.py: `def f_net\(size=\.\.\., width=\.\.\.\): return f\(size=size, width=width\)`"),
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


# ------------------------------------------------------------------ networks from a public CIFAR repository
# Small networks with the APIs of kuangliu/pytorch-cifar's (its package is called `models`, like ours):
# MobileNetV2(num_classes=10); VGG(vgg_name) with a hard-wired Linear(512, 10), five max-pools and an
# AvgPool2d(1) (32x32 only), and the user's added factory vgg11(); ShuffleNetV2(net_size) with its
# configs keyed by net_size; ResNet(block, num_blocks, num_classes=10); DLA(block=BasicBlock, num_classes=10).
CIFAR_REPO = {
    "__init__.py": "from .vgg import *\nfrom .mobilenetv2 import *\n",
    "mobilenetv2.py": """\
        import torch.nn as nn
        import torch.nn.functional as F


        class MobileNetV2(nn.Module):
            def __init__(self, num_classes=10):
                super().__init__()
                self.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False)
                self.bn1 = nn.BatchNorm2d(16)
                self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False)
                self.bn2 = nn.BatchNorm2d(32)
                self.linear = nn.Linear(32, num_classes)

            def forward(self, x):
                out = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
                out = F.avg_pool2d(out, 8)  # 32x32 images only, as the original's avg_pool2d(out, 4)
                return self.linear(out.view(out.size(0), -1))
        """,
    "vgg.py": """\
        import torch.nn as nn

        cfg = {"VGG11": [8, "M", 16, "M", 16, "M", 16, "M", 16, "M"]}


        class VGG(nn.Module):
            def __init__(self, vgg_name):
                super().__init__()
                layers, channels = [], 3
                for x in cfg[vgg_name]:
                    if x == "M":
                        layers.append(nn.MaxPool2d(2, 2))
                    else:
                        layers += [nn.Conv2d(channels, x, 3, padding=1), nn.BatchNorm2d(x), nn.ReLU(inplace=True)]
                        channels = x
                self.features = nn.Sequential(*layers, nn.AvgPool2d(1, 1))
                self.classifier = nn.Linear(16, 10)

            def forward(self, x):
                out = self.features(x)
                return self.classifier(out.view(out.size(0), -1))


        def vgg11():
            return VGG("VGG11")
        """,
    "shufflenetv2.py": """\
        import torch.nn as nn


        class ShuffleNetV2(nn.Module):
            def __init__(self, net_size):
                super().__init__()
                channels = configs[net_size]["out_channels"]
                self.conv1 = nn.Conv2d(3, channels, 3, padding=1)
                self.linear = nn.Linear(channels, 10)

            def forward(self, x):
                return self.linear(self.conv1(x).mean((2, 3)))


        configs = {0.5: {"out_channels": 8}, 1: {"out_channels": 16}}
        """,
    "resnet.py": """\
        import torch.nn as nn


        class BasicBlock(nn.Module):
            pass


        class ResNet(nn.Module):
            def __init__(self, block, num_blocks, num_classes=10):
                super().__init__()
                self.linear = nn.Linear(3, num_classes)


        class DLA(nn.Module):
            def __init__(self, block=BasicBlock, num_classes=10, levels=2, stem=None):
                super().__init__()
                self.levels = levels
                self.linear = nn.Linear(3, num_classes)

            def forward(self, x):
                return self.linear(x.mean((2, 3)))
        """,
}


@pytest.fixture
def cifar_repo(tmp_path) -> Path:
    """A checkout with the layout of kuangliu/pytorch-cifar: repo/models/*.py."""
    package = tmp_path / "repo" / "models"
    package.mkdir(parents=True)
    for name, body in CIFAR_REPO.items():
        (package / name).write_text(textwrap.dedent(body))
    return package


def test_a_class_whose_num_classes_has_a_default_gets_the_count_and_keeps_other_defaults(cifar_repo):
    import torch

    mobilenet = config(f"{cifar_repo}/mobilenetv2.py:MobileNetV2")
    assert dict(mobilenet.toggles) == {}
    assert create_model(mobilenet, 7)(torch.zeros(2, 3, 32, 32)).shape == (2, 7)
    dla = config(f"{cifar_repo}/resnet.py:DLA", levels=3)  # num_classes second, by keyword
    assert dict(dla.toggles) == {"levels": 3} and create_model(dla, 7).linear.out_features == 7
    from models.user import notes

    # stem=None is left at its default like block, though a built-in knob is called stem: only a toggle's name
    # must not be a knob's
    assert [line.split(": ", 1)[1].split(" is not")[0] for line in notes(dla.model)] == ["block=BasicBlock", "stem=None"]
    assert notes(dla.model)[0] == (f"{cifar_repo}/resnet.py:14: block=BasicBlock is not a toggle of DLA (a toggle's "
                                   "default is a bool, int, float or string): it stays at its default")
    with pytest.raises(ConfigError, match=r"block is an argument of DLA \(.*resnet\.py:14\) but not a toggle: its "
                                          r"default BasicBlock is not a bool, int, float or string; its toggles: "
                                          r"levels; not toggles, left at their defaults: block, stem"):
        config(f"{cifar_repo}/resnet.py:DLA", block="Bottleneck")


def test_a_factory_without_a_class_count_uses_its_own_classifier_when_it_numbers_the_classes(cifar_repo):
    from training.datasets import dataset_sizes
    from training.preflight import check_trial

    vgg = config(f"{cifar_repo}/vgg.py:vgg11")
    check_trial(vgg, dataset_sizes("synthetic"))  # 10 classes, 32x32: as it is
    with pytest.raises(UserModelError, match=r"vgg\.py:24: vgg11\(\)'s network gives 10 logits but synthetic has 7 "
                                             r"classes, and vgg11 takes no num_classes: its last Linear \(classifier: "
                                             r"Linear\(16, 10\)\) must give 7: give the factory an argument "
                                             r"num_classes that it passes on to that Linear, or make it "
                                             r"Linear\(16, 7\)"):
        check_trial(vgg, dataclasses.replace(dataset_sizes("synthetic"), classes=7))
    with pytest.raises(UserModelError, match=r"vgg11's network on a batch \[2, 3, 28, 28\] raised RuntimeError: .*; "
                                             r"it takes 32x32 images: give --image-size 32 \(image_size: 32 in a "
                                             r"space or config file\)$"):
        check_trial(config(f"{cifar_repo}/vgg.py:vgg11", image_size=28), dataset_sizes("synthetic"))


def test_a_first_argument_that_is_not_the_class_count_is_named_with_the_wrapper_to_write(cifar_repo):
    from training.datasets import dataset_sizes
    from training.preflight import check_trial

    file = cifar_repo / "shufflenetv2.py"
    with pytest.raises(UserModelError) as raised:
        check_trial(config(f"{file}:ShuffleNetV2"), dataset_sizes("synthetic"))
    assert str(raised.value) == (
        f"{file}:7: ShuffleNetV2(10) raised KeyError: 10; the number of classes (10) went to its first argument "
        f"net_size: if net_size is not the class count, add to {file}: `def shufflenetv2(net_size=...): return "
        f"ShuffleNetV2(net_size=net_size)`, with the value you use for each ... (its reference level), and give "
        f"model={file}:shufflenetv2; its toggles: none")
    with file.open("a") as out:  # the wrapper as the line says, net_size=0.5 its reference level
        out.write("\n\ndef shufflenetv2(net_size=0.5):\n    return ShuffleNetV2(net_size=net_size)\n")
    wrapped = config(f"{file}:shufflenetv2", net_size=1)
    assert dict(wrapped.toggles) == {"net_size": 1.0}
    check_trial(wrapped, dataset_sizes("synthetic"))
    with pytest.raises(UserModelError, match=r"resnet\.py:8: ResNet\(block, num_blocks, num_classes=10\): the number "
                                             r"of classes goes to num_classes, and block, num_blocks have no defaults; "
                                             r"its toggles: none; add to \S+resnet\.py: `def resnet\(num_classes, "
                                             r"block=\.\.\., num_blocks=\.\.\.\): return ResNet\(block=block, "
                                             r"num_blocks=num_blocks, num_classes=num_classes\)`"):
        load(f"{cifar_repo}/resnet.py:ResNet")


def test_a_built_in_knob_beside_a_user_model_is_refused_with_the_models_toggles():
    from sweep.planning.configs import validated

    with pytest.raises(ConfigError) as raised:
        validated({"model": f"{EXAMPLE}:tinycnn", "width": 0.5, "dataset": "synthetic"})
    assert str(raised.value) == (f"width=0.5 is a knob of the built-in networks; model={EXAMPLE}:tinycnn takes its own "
                                 "toggles (its factory's arguments with defaults); its toggles: depth, norm, base")


def test_our_models_package_hiding_the_users_is_named_with_the_file_to_give(cifar_repo, monkeypatch):
    repo = cifar_repo.parent
    out = subprocess.run([sys.executable, "train.py", "--model", "models.mobilenetv2:MobileNetV2", "--dataset",
                          "synthetic", "--out-dir", str(repo / "run")],
                         cwd=ROOT, env={**ENV, "PYTHONPATH": str(repo)}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert out.stderr == (f"train.py: error: model=models.mobilenetv2:MobileNetV2: models is ablation-sweeper's own "
                          f"package ({ROOT / 'models'}), which comes first on the path and hides yours ({cifar_repo}); "
                          f"give your file instead: model={cifar_repo}/mobilenetv2.py:MobileNetV2\n")
    monkeypatch.syspath_prepend(str(repo))
    with pytest.raises(UserModelError, match=rf"hides yours \({cifar_repo}\); give your file instead: "
                                             rf"model={cifar_repo}/vgg\.py:vgg11"):
        load("models:vgg11")  # the package itself: the file of it that defines vgg11
    mine = user_file(repo, "from models.vgg import VGG\n\n\ndef vgg(vgg_name='VGG11'):\n    return VGG(vgg_name)\n")
    with pytest.raises(UserModelError) as raised:  # a file of the user's whose own import finds our package
        load(f"{mine}:vgg")
    assert str(raised.value) == (f"{mine}:1: importing {mine}:vgg raised ModuleNotFoundError: No module named "
                                 f"'models.vgg': models is ablation-sweeper's own package ({ROOT / 'models'}), which "
                                 f"comes first on the path and hides yours ({cifar_repo}); put vgg in "
                                 f"{cifar_repo}/vgg.py and give model={cifar_repo}/vgg.py:vgg, or rename your package")


@pytest.mark.slow
@needs_fashion_mnist()
def test_networks_of_a_cifar_repository_train_as_they_are_on_fashion_mnist(cifar_repo, tmp_path):
    """train.py --model FILE:NAME on real Fashion-MNIST (3-channel, 32x32), one epoch of 1,000 images:
    a class with a default num_classes and a factory with none (its own Linear(16, 10)); 40% and 68% measured."""
    for model in ("mobilenetv2.py:MobileNetV2", "vgg.py:vgg11"):
        run = tmp_path / model.partition(".")[0]
        out = subprocess.run([sys.executable, "train.py", "--model", f"{cifar_repo}/{model}",
                              "--dataset", "fashion-mnist", "--subset", "1000", "--batch-size", "16", "--epochs", "1",
                              "--augment", "none", "--measure-latency", "false", "--device", "cpu",
                              "--data-dir", str(tmp_path / "data"), "--out-dir", str(run), "--quiet"],
                             cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        summary = json.loads((run / "summary.json").read_text())
        assert summary["test_acc"] > 25.0 and summary["params"] > 0  # chance is 10%; measured like any model
