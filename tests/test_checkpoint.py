"""training/checkpoint.py: atomic writes, loading, the config check, RNG state, provenance, and fit()
resuming from its checkpoints exactly. A malicious checkpoint and a full disk, end to end through
train.py, are in test_reliability.py."""
import errno
import importlib.metadata
import platform

import pytest
import torch

from study import files
from study.config import TrainConfig, UserError
from tests.helpers import TINY, collect
from training import checkpoint as ckpt
from training.loop import fit


class Stop(Exception):
    """Raised from a report callback: the trial is interrupted after that epoch's checkpoint."""


def stop_after(epoch: int):
    def report(metrics, path):
        if metrics["epoch"] == epoch:
            raise Stop
    return report


def leftovers(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# ------------------------------------------------------------------------------ files
def test_an_interrupted_write_leaves_the_previous_checkpoint_and_no_temporary_file(tmp_path, monkeypatch):
    ckpt.save_checkpoint(tmp_path, {"step": torch.tensor(1)})

    def half_then_killed(obj, path):
        with open(path, "wb") as out:
            out.write(b"half a checkpoint")
        raise KeyboardInterrupt  # Ctrl-C or SIGTERM (train.py turns it into Ctrl-C) mid-write
    monkeypatch.setattr(torch, "save", half_then_killed)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(tmp_path, {"step": torch.tensor(2)})
    monkeypatch.undo()
    assert ckpt.load_checkpoint(tmp_path)["step"].item() == 1
    assert leftovers(tmp_path) == []


def test_a_full_disk_is_a_write_error_that_says_so_and_keeps_the_previous_file(tmp_path):
    path = tmp_path / "summary.json"
    files.write_text_atomically(path, "{}")
    with pytest.raises(files.WriteError, match="no space left on device"):
        with files.written(path) as tmp:
            raise OSError(errno.ENOSPC, "No space left on device", tmp)
    assert path.read_text() == "{}" and leftovers(tmp_path) == []


def test_a_file_in_the_way_of_the_directory_is_a_write_error(tmp_path):
    (tmp_path / "run").write_text("not a directory")
    with pytest.raises(files.WriteError, match="cannot write"):
        ckpt.save_checkpoint(tmp_path / "run" / "checkpoint", {"step": torch.tensor(1)})


def test_written_files_are_readable_by_all_like_a_plain_open(tmp_path):
    files.write_text_atomically(tmp_path / "config.json", "{}")
    assert (tmp_path / "config.json").stat().st_mode & 0o777 == 0o644  # mkstemp alone gives 0600


def test_what_is_not_a_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no checkpoint at"):
        ckpt.load_checkpoint(tmp_path)  # a directory without checkpoint.pt
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04 the first bytes of a zip, then nothing")
    with pytest.raises(UserError, match="cut.pt is not a readable checkpoint"):
        ckpt.load_checkpoint(tmp_path / "cut.pt")
    torch.save(torch.zeros(2), tmp_path / "bare.pt")
    with pytest.raises(UserError, match="holds a Tensor, not a dict"):
        ckpt.load_checkpoint(tmp_path / "bare.pt")


def test_weights_come_from_the_model_entry_only():
    with pytest.raises(UserError, match="no model weights"):
        ckpt.model_weights({"state_dict": {}})


# ------------------------------------------------------------------------------ state and provenance
def test_restored_rng_state_repeats_the_same_draws():
    saved = ckpt.capture_rng()
    first = torch.rand(5)
    ckpt.restore_rng(saved)
    assert torch.equal(torch.rand(5), first)


def test_provenance_names_the_versions_and_the_machine():
    record = ckpt.provenance()
    assert record["versions"]["torch"] == importlib.metadata.version("torch")
    assert record["python"] == platform.python_version() and record["host"] == platform.node()
    assert (record["cuda_device"] is None) == (not torch.cuda.is_available())


# ------------------------------------------------------------------------------ fit() and its checkpoints
def test_the_checkpoint_holds_the_metrics_of_its_epoch(tmp_path):
    rows, report = collect()
    fit(TrainConfig(**{**TINY, "epochs": 2}), report, checkpoint_dir=str(tmp_path))
    saved = ckpt.load_checkpoint(tmp_path)
    assert saved["metrics"] == rows[-1] and saved["state"]["epoch"] == 2
    assert saved["config"] == TrainConfig(**{**TINY, "epochs": 2}).to_dict()


def test_resume_equals_an_uninterrupted_run(tmp_path):
    cfg = TrainConfig(**{**TINY, "subset": 512, "epochs": 4, "augment": "strong", "dropout": 0.3,
                         "finetune_epochs": 1, "finetune_hard_classes": 3})  # exact equality: any size will do
    full_rows, report = collect()
    full = fit(cfg, report, checkpoint_dir=str(tmp_path / "full"))
    with pytest.raises(Stop):
        fit(cfg, stop_after(2), checkpoint_dir=str(tmp_path / "cut"))
    resumed_rows, report = collect()
    resumed = fit(cfg, report, resume_from=str(tmp_path / "cut"), checkpoint_dir=str(tmp_path / "cut"))
    assert [r["epoch"] for r in resumed_rows] == [3, 4, 5]
    keys = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "best_val_acc", "train_phase")
    for a, b in zip(full_rows[2:], resumed_rows):
        assert {k: a[k] for k in keys} == {k: b[k] for k in keys}
    assert resumed["test_acc"] == full["test_acc"]
    assert full_rows[-1]["train_phase"] == "finetune"


def test_resuming_a_finished_trial_trains_nothing_and_returns_its_summary(tmp_path):
    cfg = TrainConfig(**{**TINY, "epochs": 1})
    done = fit(cfg, checkpoint_dir=str(tmp_path))
    rows, report = collect()
    again = fit(cfg, report, resume_from=str(tmp_path), checkpoint_dir=str(tmp_path))
    assert rows == [] and again["test_acc"] == done["test_acc"] and again["epochs_run"] == 1


def test_resume_refuses_a_different_config(tmp_path):
    fit(TrainConfig(**{**TINY, "epochs": 1}), checkpoint_dir=str(tmp_path))
    with pytest.raises(UserError, match="differs in: lr"):
        fit(TrainConfig(**{**TINY, "epochs": 1, "lr": 0.01}), resume_from=str(tmp_path))


def test_init_from_starts_from_checkpoint_weights(tmp_path):
    fit(TrainConfig(**{**TINY, "epochs": 1}), checkpoint_dir=str(tmp_path))
    weights = ckpt.load_checkpoint(tmp_path)["model"]
    cfg = TrainConfig(**{**TINY, "epochs": 1, "lr": 0.0, "scheduler": "none", "init_from": str(tmp_path)})
    fit(cfg, checkpoint_dir=str(tmp_path / "b"))
    after = ckpt.load_checkpoint(tmp_path / "b")["model"]
    # lr 0: weights stay those loaded (BN running stats move, so compare conv/linear weights only)
    for name, tensor in weights.items():
        if name.endswith("weight") and tensor.ndim > 1:
            assert torch.equal(tensor, after[name]), name
