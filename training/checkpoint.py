"""Checkpoints that resume a trial exactly, and the provenance saved beside every run."""
from __future__ import annotations

import importlib.metadata
import os
import pickle
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from study.config import UserError
from study.files import written
from training.metrics import cpu_model

CHECKPOINT_FILE = "checkpoint.pt"


def save_checkpoint(directory: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write `state` to DIR/checkpoint.pt atomically (temp file + rename): a kill or a full disk
    mid-write leaves the previous checkpoint intact and no temporary file behind."""
    directory = Path(directory)
    with written(directory / CHECKPOINT_FILE) as tmp:
        torch.save(state, tmp)
    return directory / CHECKPOINT_FILE




def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint file, or DIR/checkpoint.pt. `weights_only=True`: a checkpoint is data, and
    loading one must not run code from it."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}")
    try:
        loaded = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # torch's message is a page of advice on how to load it unsafely
        raise UserError(f"{path} is not a readable checkpoint: it holds Python objects beyond tensors and "
                        "plain containers, which weights-only loading refuses (they could run code)") from None
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise UserError(f"{path} is not a readable checkpoint: {str(exc).splitlines()[0]}") from None
    if not isinstance(loaded, dict):
        raise UserError(f"{path} is not a checkpoint of this project: it holds a {type(loaded).__name__}, "
                        "not a dict with the model's weights")
    return loaded


def model_weights(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model state dict of a checkpoint written by fit() (what --init-from starts from)."""
    if not isinstance(checkpoint.get("model"), dict):
        raise UserError("checkpoint holds no model weights (expected a key 'model' with a state dict)")
    return checkpoint["model"]


# Fields that change only the passes after the last epoch (the test pass, the latency timing), never the
# weights: a checkpoint resumes under either value (a screen whose confirm phase was planned after the
# checkpoint skips them).
AFTER_TRAINING = {"evaluate_test": True, "measure_latency": True}


def check_same_config(saved: dict[str, Any], config: dict[str, Any]) -> None:
    """A checkpoint resumes only the config it was written with (but for AFTER_TRAINING's fields)."""
    written_with = saved.get("config") if isinstance(saved.get("config"), dict) else {}
    written_with = {**AFTER_TRAINING, **written_with}
    changed = sorted(k for k in set(config) | set(written_with)
                     if k not in AFTER_TRAINING and written_with.get(k) != config.get(k))
    if changed:
        raise UserError(f"checkpoint was written with a different config (differs in: {', '.join(changed)})")


def capture_rng() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def provenance() -> dict[str, Any]:
    """What reproducing a run needs beyond its config: package versions, git revision, machine."""
    versions = {}
    for pkg in ("torch", "ray", "optuna", "numpy", "ablation-sweeper"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "versions": versions,
        "python": platform.python_version(),
        "git_revision": _git_revision(),
        "host": platform.node(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _git_revision() -> str | None:
    """The source tree's commit (with '+dirty' when it has uncommitted changes), if it is a checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty else "")
