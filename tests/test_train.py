"""The train.py CLI: its run directory, console and TensorBoard output (training/reporter.py), config
files, errors, --help. fit() itself is tested in test_loop.py and test_checkpoint.py."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train
from study.config import MODEL_NAMES

ROOT = Path(__file__).resolve().parent.parent


def test_cli_writes_run_dir_and_summary(tmp_path, capsys):
    """Also what the console shows (a header, one warning line for too few steps, a rounded summary
    saying accuracies are percent) and TensorBoard: the tags a sweep's trials have, no bookkeeping,
    per-class accuracy by class name, HParams with every knob."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    out = tmp_path / "run"
    args = ["--dataset", "synthetic", "--subset", "256", "--epochs", "2", "--width", "0.25",
            "--batch-size", "64", "--measure-latency", "false", "--out-dir", str(out)]
    assert train.main(args) == 0
    said = capsys.readouterr()
    assert said.out.startswith(f"run {out}: loading synthetic, building squeezenet\n")
    head = said.out.splitlines()[1]
    assert head.startswith("synthetic 32x32, 10 classes: ") and " | squeezenet, 0.05M params" in head
    assert "| cpu fp32" in head and "4 steps of 64 per epoch, 2 epochs" in head
    assert said.err.count("\n") == 1 and "warning: only 4 optimiser steps per epoch" in said.err
    printed = json.loads(said.out[said.out.index("\n{") + 1:])
    assert printed["units"]["*acc*"] == "percent of images" and printed["test_acc"] == round(printed["test_acc"], 2)
    assert all(len(str(v)) < 10 for v in printed.values() if isinstance(v, float))
    events = EventAccumulator(str(out))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"ray/tune/val_acc", "ray/tune/train_loss", "ray/tune/test_acc", "ray/tune/test_acc_class/rings-low"} <= set(tags)
    assert not {"ray/tune/done", "ray/tune/epoch", "ray/tune/should_checkpoint"} & set(tags)
    start = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    assert hparams["batch_size"].number_value == 64 and hparams["optimizer"].string_value == "sgd"
    summary = json.loads((out / "summary.json").read_text())
    # the constants once, among the HParams, not as a flat scalar every epoch
    assert not {"ray/tune/params", "ray/tune/flops", "ray/tune/size_mb", "ray/tune/test_images"} & set(tags)
    assert hparams["params"].number_value == summary["params"] and hparams["test_images"].number_value > 0
    assert summary["epochs_run"] == 2
    saved = json.loads((out / "config.json").read_text())
    assert saved["config"]["subset"] == 256 and saved["versions"]["torch"]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert list(out.glob("events.out.tfevents.*"))
    # resume a finished run: nothing left to train, same summary
    assert train.main(["--resume", str(out), "--epochs", "2"]) == 0


def test_cli_config_file_and_flag_override(tmp_path):
    (tmp_path / "c.yaml").write_text("dataset: synthetic\nsubset: 256\nepochs: 5\nwidth: 0.25\n"
                                     "measure_latency: false\n")
    assert train.main(["--config", str(tmp_path / "c.yaml"), "--epochs", "1", "--quiet",
                       "--out-dir", str(tmp_path / "r")]) == 0
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["epochs_run"] == 1


@pytest.mark.parametrize("args, words", [
    (["--epochs", "x"], "epochs='x' has the wrong type"),
    (["--model", "vgg"], "model='vgg' is not one of"),
    (["--config", "/nope.yaml"], "cannot read config file"),
    (["--resume", "/nope"], "not a train.py run directory"),
    (["--dataset", "synthetic", "--device", "cuda"], "no CUDA GPU"),
])
def test_cli_bad_input_is_one_line_exit_2(args, words, tmp_path, capsys):
    """In this process (test_reliability.py runs train.py as a fresh process on bad input too)."""
    if torch.cuda.is_available() and "cuda" in args:
        pytest.skip("a GPU is present")
    code = train.main([*args, "--out-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert words in err
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_help_documents_every_knob():
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for flag in ("--label-smoothing", "--dsconv", "--finetune-hard-classes", "--config", "--resume"):
        assert flag in proc.stdout
    assert "(default: None)" not in proc.stdout and "(default: 'cifar10')" in proc.stdout  # once per knob
    model = " ".join(proc.stdout[proc.stdout.index("  --model "):proc.stdout.index("  --width ")].split())
    assert " | ".join(MODEL_NAMES) in model and "MODEL_NAMES" not in model  # the names, not their list's name


def test_help_answers_without_importing_torch():
    probe = ("import sys, runpy; sys.argv = ['train.py', '--help']\ntry:\n    runpy.run_path('train.py', run_name='__main__')\n"
             "except SystemExit:\n    pass\nprint('torch' in sys.modules, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert proc.stderr.strip().endswith("False") and "--recipe NAME" in proc.stdout


def resolved(argv, tmp_path=None):
    return train.resolve_config(train.build_parser().parse_args(argv))


def test_recipe_and_stage_apply_a_sweeps_preset_and_flags_win(tmp_path):
    from study.trial import RECIPES, STAGES

    cfg = resolved(["--recipe", "holistic", "--lr", "0.05"])
    assert {k: getattr(cfg, k) for k in RECIPES["holistic"] if k != "lr"} == \
        {k: v for k, v in RECIPES["holistic"].items() if k != "lr"} and cfg.lr == 0.05
    assert resolved(["--stage", "simple_attention"]).attention == "simple"
    assert resolved(["--stage", "simple_attention"]).batch_norm is STAGES["simple_attention"]["batch_norm"]
    # a preset's per-model entries: the ResNet study pretrained and froze ResNet-152 only
    assert resolved(["--recipe", "resnet_study", "--model", "resnet152"]).freeze == "backbone"
    assert resolved(["--recipe", "resnet_study", "--model", "resnet18"]).pretrained is False
    # a file may name a preset; its own fields beat it, --recipe beats the file, flags beat all
    (tmp_path / "c.yaml").write_text("recipe: baseline\nlr: 0.2\nscheduler: cosine\n")
    from_file = resolved(["--config", str(tmp_path / "c.yaml")])
    assert (from_file.lr, from_file.scheduler, from_file.optimizer) == (0.2, "cosine", "sgd")
    both = resolved(["--config", str(tmp_path / "c.yaml"), "--recipe", "holistic", "--label-smoothing", "0"])
    assert (both.lr, both.scheduler, both.label_smoothing) == (0.1, "onecycle", 0.0)


def test_a_preset_that_would_change_a_resumed_run_is_refused(tmp_path, capsys):
    out = tmp_path / "r"
    base = ["--dataset", "synthetic", "--subset", "256", "--epochs", "1", "--width", "0.25", "--quiet",
            "--measure-latency", "false"]
    assert train.main([*base, "--out-dir", str(out)]) == 0
    capsys.readouterr()
    assert train.main(["--resume", str(out), "--recipe", "holistic"]) == 2
    assert "--label-smoothing" in capsys.readouterr().err  # among the knobs it would change


@pytest.mark.slow
def test_real_fashion_mnist_subset_learns(fashion_mnist_run):
    """4,000 real Fashion-MNIST images, 3 epochs, a half-width SqueezeNet on CPU (conftest's
    FASHION_MNIST_RUN, through train.py's CLI): >= 75% test accuracy."""
    summary = json.loads((fashion_mnist_run / "summary.json").read_text())
    print(json.dumps({k: summary[k] for k in ("test_acc", "best_val_acc", "wall_time_s")}))
    assert summary["test_acc"] >= 75.0


def test_a_terminal_gets_a_progress_bar_per_epoch_with_images_per_second(tmp_path):
    """On a terminal (a pseudo-terminal here) each epoch shows a tqdm bar: images done, img/s, ETA."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a 120-column terminal
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--dataset", "synthetic", "--subset", "640",
                             "--epochs", "1", "--width", "0.25", "--batch-size", "32", "--measure-latency", "false",
                             "--device", "cpu", "--out-dir", str(tmp_path / "run")],
                            stdout=follower, stderr=follower, cwd=ROOT)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    assert proc.wait(timeout=120) == 0, seen.decode(errors="replace")[-2000:]
    text = seen.decode(errors="replace")
    bar = re.search(r"epoch 1: +\d+%\|[^|]*\| *\d+/640 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+img/s\]", text)
    assert bar, text[-2000:]  # images done of 640, elapsed<ETA, rate
