"""training/loop.py: fit() on the synthetic dataset, its reports, phases and the status it ends with
(study/states.py); the device and precision it resolves. Resuming is in test_checkpoint.py."""
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from study import states as status
from study.config import TrainConfig, UserError
from tests.helpers import TINY, collect
from training.loop import class_key, fit, resolve_device, resolve_precision

ROOT = Path(__file__).resolve().parent.parent
# Weights that never move (lr 0, and no BatchNorm statistics to drift): every epoch's val accuracy is the
# first's, so patience runs out on a known epoch.
FROZEN = dict(TINY, lr=0.0, scheduler="none", batch_norm=False)


def test_fit_reports_every_epoch_and_summarises(tmp_path):
    rows, report = collect()
    summary = fit(TrainConfig(**{**TINY, "measure_latency": True}), report, checkpoint_dir=str(tmp_path))
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[-1]["done"] and not rows[0]["done"]
    assert [r["status"] for r in rows] == [status.RUNNING, status.RUNNING, status.FINISHED]
    assert summary["status"] == status.FINISHED and summary["epochs_run"] == 3
    for key in ("best_val_acc", "final_val_acc", "test_acc", "params", "flops", "size_mb",
                "latency_ms_b1", "latency_ms_b256", "wall_time_s"):
        assert summary[key] > 0, key
    assert len(summary["test_acc_per_class"]) == 10
    assert summary["test_acc"] > 20  # well above chance after 3 epochs on the learnable synthetic set
    assert (tmp_path / "checkpoint.pt").is_file()
    assert summary["wall_time_s"] > rows[-1]["elapsed_s"]  # the test pass and the latency timing count


def test_a_config_without_the_test_pass_reports_no_test_metrics(tmp_path):
    """A screen a confirm phase follows skips the passes nothing reads (sweep.trainable); resuming its
    checkpoint under the other value is allowed (they change nothing the weights depend on)."""
    rows, report = collect()
    summary = fit(TrainConfig(**{**TINY, "evaluate_test": False, "measure_latency": False}), report,
                  checkpoint_dir=str(tmp_path))
    assert rows[-1]["status"] == status.FINISHED and summary["best_val_acc"] > 0
    assert not any(k.startswith(("test_acc", "test_loss", "latency_")) for k in rows[-1])
    assert summary["test_acc_per_class"] == {} and summary["wall_time_s"] >= rows[-1]["elapsed_s"]
    from training import checkpoint as ckpt
    saved = ckpt.load_checkpoint(tmp_path / "checkpoint.pt")
    ckpt.check_same_config(saved, TrainConfig(**TINY).to_dict())  # no error
    with pytest.raises(UserError, match="differs in: lr"):
        ckpt.check_same_config(saved, TrainConfig(**{**TINY, "lr": 0.5}).to_dict())
    with pytest.raises(UserError, match="differs in: gone"):  # a key only the checkpoint has differs too
        ckpt.check_same_config({"config": {**saved["config"], "gone": 1}}, TrainConfig(**TINY).to_dict())


def test_patience_ends_the_trial_as_early_stopped():
    rows, report = collect()
    summary = fit(TrainConfig(**{**FROZEN, "epochs": 6, "early_stop_patience": 2}), report)
    assert [r["status"] for r in rows] == [status.RUNNING, status.RUNNING, status.EARLY_STOPPED]
    assert summary["status"] == status.EARLY_STOPPED and summary["epochs_run"] == 3
    assert summary["best_epoch"] == 1


def test_patience_ending_the_main_phase_still_fine_tunes_and_the_trial_ends_early_stopped():
    rows, report = collect()
    summary = fit(TrainConfig(**{**FROZEN, "epochs": 6, "early_stop_patience": 1, "finetune_epochs": 1}),
                  report)
    assert [r["train_phase"] for r in rows] == ["main", "main", "finetune"]
    assert summary["status"] == status.EARLY_STOPPED


def test_nan_loss_stops_the_trial_as_diverged():
    rows, report = collect()
    summary = fit(TrainConfig(**{**TINY, "epochs": 5, "lr": 1e30, "scheduler": "none",
                                 "optimizer": "sgd", "momentum": 0.0}), report)
    assert summary["status"] == status.DIVERGED and summary["epochs_run"] == 1
    assert len(rows) == 1 and rows[0]["status"] == status.DIVERGED and rows[0]["done"]
    assert math.isnan(rows[0]["train_loss"]) or math.isinf(rows[0]["train_loss"])


@pytest.mark.parametrize("scheduler", ["none", "onecycle", "cosine", "step"])
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_every_schedule_and_optimizer_trains(scheduler, optimizer):
    summary = fit(TrainConfig(**{**TINY, "epochs": 2, "scheduler": scheduler, "optimizer": optimizer,
                                 "lr": 0.05 if optimizer == "sgd" else 2e-3, "warmup_epochs": 0.5,
                                 "step_size": 1, "clip_grad_norm": 1.0, "label_smoothing": 0.1}))
    assert summary["status"] == status.FINISHED


class Recorder:
    """A Progress (training.loop.Progress) that keeps what fit() shows it."""

    def __init__(self) -> None:
        self.infos, self.epochs = [], []

    def start(self, info):
        self.infos.append(info)

    def epoch(self, batches, steps, epoch):
        batches = list(batches)
        self.epochs.append((epoch, steps, len(batches)))
        return batches


def test_progress_is_told_the_trial_as_built_and_sees_every_epochs_batches():
    progress = Recorder()
    summary = fit(TrainConfig(**{**TINY, "epochs": 2}), progress=progress)
    [info] = progress.infos
    assert (info["model"], info["epochs"], info["resumed_at_epoch"]) == ("squeezenet", 2, 0)
    assert info["train_images"] == summary["train_images"] and info["params"] == summary["params"]
    steps = info["steps_per_epoch"]
    assert steps > 1 and progress.epochs == [(1, steps, steps), (2, steps, steps)]


def test_class_keys_stay_one_tag_level_deep():
    assert class_key("T-shirt/top") == "test_acc_class/T-shirt_top"
    assert class_key("rings low") == "test_acc_class/rings_low"


def test_precision_auto_is_fp32_off_cuda_and_fp16_needs_cuda():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu)[2] == "fp32"
    assert resolve_precision("bf16", cpu)[2] == "bf16"
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", cpu)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_asking_for_a_missing_cuda_gpu_is_a_user_error():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(UserError, match="no CUDA GPU is visible"):
        resolve_device("cuda")


def test_the_status_names_import_nothing():
    """The analysis imports study.states to read experiment directories, without torch."""
    code = ("import sys, study.states\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'models'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT).stdout
    assert out.strip() == "[]"
    # the words recorded experiments hold on disk: a rename would orphan every one of them
    assert status.FINAL_STATUSES == ("finished", "early_stopped", "diverged") and status.RUNNING == "running"
