"""fit() and the train.py CLI: learning, checkpoint resume, outputs, errors."""
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train
from training.checkpoint import load_checkpoint
from training.config import TrainConfig, UserError
from training.loop import fit

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(dataset="synthetic", subset=1024, batch_size=32, eval_batch_size=256, width=0.25,
            epochs=3, lr=0.05, measure_latency=False, device="cpu")


def collect():
    rows = []
    return rows, lambda metrics, path: rows.append(dict(metrics))


def test_fit_reports_every_epoch_and_summarises(tmp_path):
    rows, report = collect()
    summary = fit(TrainConfig(**{**TINY, "measure_latency": True}), report, checkpoint_dir=str(tmp_path))
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[-1]["done"] and not rows[0]["done"]
    assert summary["status"] == "finished" and summary["epochs_run"] == 3
    for key in ("best_val_acc", "final_val_acc", "test_acc", "params", "flops", "size_mb",
                "latency_ms_b1", "latency_ms_b256", "wall_time_s"):
        assert summary[key] > 0, key
    assert len(summary["test_acc_per_class"]) == 10
    assert summary["test_acc"] > 20  # well above chance after 3 epochs on the learnable synthetic set
    assert (tmp_path / "checkpoint.pt").is_file()


def test_resume_equals_an_uninterrupted_run(tmp_path):
    cfg = TrainConfig(**{**TINY, "subset": 512, "epochs": 4, "augment": "strong", "dropout": 0.3,
                         "finetune_epochs": 1, "finetune_hard_classes": 3})  # exact equality: any size will do
    full_rows, report = collect()
    full = fit(cfg, report, checkpoint_dir=str(tmp_path / "full"))

    class Stop(Exception):
        pass

    def stop_after_two(metrics, path):
        if metrics["epoch"] == 2:
            raise Stop
    with pytest.raises(Stop):
        fit(cfg, stop_after_two, checkpoint_dir=str(tmp_path / "cut"))
    resumed_rows, report = collect()
    resumed = fit(cfg, report, resume_from=str(tmp_path / "cut"), checkpoint_dir=str(tmp_path / "cut"))
    assert [r["epoch"] for r in resumed_rows] == [3, 4, 5]
    keys = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "best_val_acc", "phase")
    for a, b in zip(full_rows[2:], resumed_rows):
        assert {k: a[k] for k in keys} == {k: b[k] for k in keys}
    assert resumed["test_acc"] == full["test_acc"]
    assert full_rows[-1]["phase"] == "finetune"


def test_resume_refuses_a_different_config(tmp_path):
    fit(TrainConfig(**{**TINY, "epochs": 1}), checkpoint_dir=str(tmp_path))
    with pytest.raises(UserError, match="differs in: lr"):
        fit(TrainConfig(**{**TINY, "epochs": 1, "lr": 0.01}), resume_from=str(tmp_path))


def test_early_stopping_ends_the_trial(tmp_path):
    rows, report = collect()
    summary = fit(TrainConfig(**{**TINY, "epochs": 6, "lr": 0.0, "scheduler": "none",
                                 "early_stop_patience": 1}), report)
    assert summary["status"] == "early_stopped"
    assert len(rows) < 6


def test_nan_loss_stops_the_trial_as_diverged():
    rows, report = collect()
    summary = fit(TrainConfig(**{**TINY, "epochs": 5, "lr": 1e30, "scheduler": "none",
                                 "optimizer": "sgd", "momentum": 0.0}), report)
    assert summary["status"] == "diverged"
    assert len(rows) == 1 and rows[0]["status"] == "diverged"
    assert math.isnan(rows[0]["train_loss"]) or math.isinf(rows[0]["train_loss"])


def test_init_from_starts_from_checkpoint_weights(tmp_path):
    fit(TrainConfig(**{**TINY, "epochs": 1}), checkpoint_dir=str(tmp_path))
    weights = load_checkpoint(tmp_path)["model"]
    cfg = TrainConfig(**{**TINY, "epochs": 1, "lr": 0.0, "scheduler": "none", "init_from": str(tmp_path)})
    first, report = collect()
    fit(cfg, report, checkpoint_dir=str(tmp_path / "b"))
    after = load_checkpoint(tmp_path / "b")["model"]
    # lr 0: weights stay those loaded (BN running stats move, so compare conv/linear weights only)
    for name, tensor in weights.items():
        if name.endswith("weight") and tensor.ndim > 1:
            assert torch.equal(tensor, after[name]), name


@pytest.mark.parametrize("scheduler", ["none", "onecycle", "cosine", "step"])
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_every_schedule_and_optimizer_trains(scheduler, optimizer):
    summary = fit(TrainConfig(**{**TINY, "epochs": 2, "scheduler": scheduler, "optimizer": optimizer,
                                 "lr": 0.05 if optimizer == "sgd" else 2e-3, "warmup_epochs": 0.5,
                                 "step_size": 1, "clip_grad_norm": 1.0, "label_smoothing": 0.1}))
    assert summary["status"] == "finished"


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
