"""Trials share a GPU by default (sweep/packing.py): the share from the largest arm's training
footprint, checked on the models' real shapes, and a real sweep on a Ray that declares one logical
GPU (a CPU machine can: ray.init(num_gpus=1)), which records the share and runs trials side by side."""
import json

import pandas as pd
import pytest

from study.config import TrainConfig
from study.layout import SWEEP_FILE
from study.load import load
from sweep import run
from sweep.packing import GIB, footprint, packing


@pytest.mark.parametrize("model, share", [("squeezenet", 0.25), ("resnet18", 0.5), ("resnet50", 1.0),
                                          ("resnet152", 1.0)])
def test_the_share_follows_the_footprint_at_the_default_batch(model, share):
    cfg = TrainConfig(model=model)  # batch 256, 32x32, the CIFAR stem
    assert packing([cfg], {cfg.dataset: 10}).share == share


def test_the_footprint_grows_with_the_batch_and_the_largest_arm_decides():
    small, large = TrainConfig(batch_size=64), TrainConfig(batch_size=256)
    assert footprint(large, 10) > 3 * footprint(small, 10)
    mixed = packing([TrainConfig(model="squeezenet"), TrainConfig(model="resnet18")], {"cifar10": 10})
    assert mixed.model == "resnet18" and mixed.share == 0.5 and 2 * GIB < mixed.footprint <= 5 * GIB


@pytest.fixture()
def ray_with_a_gpu():
    """A private Ray that declares 4 CPUs and one logical GPU (nothing is placed on a device)."""
    import ray

    ray.init(address="local", num_cpus=4, num_gpus=1, include_dashboard=False)
    yield
    ray.shutdown()


def most_at_once(trials: pd.DataFrame) -> int:
    """The most trials whose [started_at, ended_at] overlap at one moment."""
    events = sorted([(t, 1) for t in trials["started_at"]] + [(t, -1) for t in trials["ended_at"]],
                    key=lambda e: (e[0], e[1]))
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


@pytest.mark.slow
def test_a_sweep_on_a_cluster_with_a_gpu_packs_its_trials_and_records_why(ray_with_a_gpu, tmp_path, capsys):
    assert run.main(["--space", "smoke", "--samples", "2", "--storage-path", str(tmp_path), "--name", "packed"]) == 0
    out = capsys.readouterr().out
    assert "GPUs: 0.25 of a GPU per trial (4 per GPU)" in out
    record = json.loads((tmp_path / "packed" / SWEEP_FILE).read_text())
    assert record["plan"]["gpus_per_trial"] == 0.25 and record["packing"]["share"] == 0.25
    trials = load(tmp_path / "packed").trials
    assert len(trials) == 4 and set(trials["stop_reason"]) <= {"finished", "scheduler_stopped"}
    assert most_at_once(trials) >= 2  # a whole GPU per trial would have run them one at a time
    # the user's --gpus-per-trial is kept as given
    assert run.main(["--space", "smoke", "--storage-path", str(tmp_path), "--name", "whole",
                     "--gpus-per-trial", "1"]) == 0
    assert json.loads((tmp_path / "whole" / SWEEP_FILE).read_text())["plan"]["gpus_per_trial"] == 1
    assert "packing" not in json.loads((tmp_path / "whole" / SWEEP_FILE).read_text())
