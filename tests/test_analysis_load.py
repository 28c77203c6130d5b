"""study.load and the report CLI on a hand-built experiment directory in Ray Tune 2.60's layout
(every way a trial can end), and the CLI's errors. The real experiments are in
test_analysis_experiment.py."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.report import main as report_main
from study.load import load
from study.states import TIMED_OUT_ERROR, stop_reason
from tests.helpers import write_experiment

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def experiment(tmp_path):
    return write_experiment(tmp_path / "exp")


def test_every_way_a_trial_ends(experiment):
    exp = load(experiment)
    trials = exp.trials.set_index("trial_id")
    assert trials["stop_reason"].to_dict() == {
        "aaaaa_00000": "finished", "aaaaa_00001": "scheduler_stopped", "aaaaa_00002": "errored",
        "aaaaa_00003": "unfinished", "aaaaa_00004": "unfinished", "aaaaa_00005": "diverged",
        "aaaaa_00006": "unfinished"}
    assert trials.loc["aaaaa_00002", "error"] == "RuntimeError: CUDA out of memory"
    assert trials.loc["aaaaa_00000", "test_acc"] == 59 and trials.loc["aaaaa_00000", "precision_used"] == "fp32"
    assert trials.loc["aaaaa_00003", "last_epoch"] == 1  # the cut line is skipped
    assert trials.loc["aaaaa_00004", "attention"] == "simple" and trials.loc["aaaaa_00004", "last_epoch"] == 0
    assert (trials.loc["aaaaa_00000", "lr"], trials.loc["aaaaa_00000", "epochs"]) == (0.1, 30)  # defaults
    assert list(exp.unfinished["trial_id"]) == ["aaaaa_00003", "aaaaa_00004", "aaaaa_00006"]
    assert exp.never_started == 1


def test_epoch_frame_is_one_row_per_trial_epoch(experiment):
    epochs = load(experiment).epochs
    assert epochs.groupby("trial_id").size().to_dict() == {
        "aaaaa_00000": 2, "aaaaa_00001": 1, "aaaaa_00003": 1, "aaaaa_00005": 1, "aaaaa_00006": 1}
    assert {"epoch", "val_acc", "train_loss", "val_loss", "lr"} <= set(epochs.columns)
    assert "done" not in epochs  # Ray overwrites it: never trusted
    assert set(epochs["train_phase"]) == {"main"} and "phase" not in epochs  # "phase" names screen/confirm


def test_the_resumed_runs_state_wins_over_a_first_run_file_with_a_later_timestamp(experiment):
    """A resumed sweep writes a new experiment_state file (named after its session's start); the first
    run's file, with every trial still pending, may carry a later modification time (seen: 1 us). Ray
    reads the greatest file name, and so do we; a later file cut short by a kill gives way."""
    resumed = experiment / "experiment_state-2026-01-01_00-00-00.json"
    first = resumed.with_name("experiment_state-2025-12-31_23-00-00.json")
    state = json.loads(resumed.read_text())
    stale = [[json.dumps({**json.loads(t), "status": "PENDING"}), r] for t, r in state["trial_data"]]
    first.write_text(json.dumps({"trial_data": stale}))
    later = resumed.stat().st_mtime_ns + 1_000
    os.utime(first, ns=(later, later))
    assert load(experiment).trials.set_index("trial_id").loc["aaaaa_00001", "stop_reason"] == "scheduler_stopped"
    resumed.with_name("experiment_state-2026-01-02_00-00-00.json").write_text('{"trial_data": [["{\\"tri')
    assert load(experiment).trials.set_index("trial_id").loc["aaaaa_00001", "stop_reason"] == "scheduler_stopped"


@pytest.mark.parametrize("reason,args", [
    ("finished", ("TERMINATED", {"status": "finished", "epochs_run": 3}, None)),
    ("early_stopped", ("RUNNING", {"status": "early_stopped", "epochs_run": 3}, None)),  # stale state
    ("scheduler_stopped", ("TERMINATED", {"status": "running", "done": True}, None)),
    ("errored", ("ERROR", {"status": "running"}, "RuntimeError: boom")),
    ("errored", (None, {}, "RuntimeError: boom")),
    ("errored", ("ERROR", {}, "")),  # an error.txt without a line
    ("timed_out", ("ERROR", {"status": "running"}, TIMED_OUT_ERROR.format(seconds=30))),
    ("timed_out", (None, {}, TIMED_OUT_ERROR.format(seconds=1.5))),
    ("unfinished", ("PAUSED", {"status": "running"}, None)),
    ("unfinished", (None, {"status": "running"}, None)),
])
def test_stop_reason_rules(reason, args):
    assert stop_reason(*args) == reason


def test_report_lists_unfinished_trials_and_writes_every_file(experiment, tmp_path, capsys):
    out = tmp_path / "report"
    assert report_main([str(experiment), "--out", str(out), "--format", "csv"]) == 0
    text = (out / "report.md").read_text()
    assert "3 trial(s) unfinished, 1 never started" in text
    for trial_id in ("aaaaa_00003", "aaaaa_00004", "aaaaa_00006"):
        assert trial_id in text
    assert "RuntimeError: CUDA out of memory" in text and "scheduler_stopped" in text
    for name in ("trials.csv", "epochs.csv", "trial_outcomes.csv", "unfinished.csv", "stopping.png",
                 "learning_curves.png", "loss_curves.png"):
        assert (out / name).is_file(), name


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: p, lambda p: p / "file.txt"])
def test_bad_run_dir_is_one_line_error_and_writes_nothing(tmp_path, make, capsys):
    (tmp_path / "file.txt").write_text("x")
    before = sorted(tmp_path.rglob("*"))
    assert report_main([str(make(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("report: error: ") and len(err.strip().splitlines()) == 1
    assert sorted(tmp_path.rglob("*")) == before


def test_cli_error_has_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "analysis.report", str(tmp_path / "missing")],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr == f"report: error: {tmp_path / 'missing'} is not a directory\n"
