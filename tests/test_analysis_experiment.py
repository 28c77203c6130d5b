"""The analysis on real Ray Tune experiments run here by `sweep/run.py`: a finished one (ASHA over
attention x 2 seeds, 3 epochs) loaded, reported and walked through by the notebook, and an
interrupted one (Ctrl-C after the first trial) whose report names the unfinished trials."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis.load import load
from sweep.spaces import SPACES

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow
# The smoke space (a small synthetic set, quarter-width SqueezeNet, attention none/channel) with 2
# seeds per arm and 3 epochs, so ASHA (rungs at epochs 1 and 2) has something to stop.
SWEEP = [sys.executable, "sweep/run.py", "--space", "smoke", "--samples", "2", "--epochs", "3"]


def sweep_env(tmp_path_factory) -> dict:
    return {**os.environ, "ABLATION_DATA_DIR": str(tmp_path_factory.getbasetemp() / "data"),
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    storage = tmp_path_factory.mktemp("sweeps")
    subprocess.run([*SWEEP, "--grace-period", "1", "--reduction-factor", "2", "--set", "measure_latency=true",
                    "--storage-path", str(storage), "--name", "smoke"],
                   cwd=ROOT, env=sweep_env(tmp_path_factory), check=True, capture_output=True, timeout=240)
    return storage / "smoke"


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """One trial at a time; Ctrl-C (SIGINT) once the first trial has sent its final report."""
    storage = tmp_path_factory.mktemp("sweeps")
    run_dir = storage / "cut"
    command = [*SWEEP, "--max-concurrent", "1", "--storage-path", str(storage), "--name", "cut"]
    driver = subprocess.Popen(command, cwd=ROOT, env=sweep_env(tmp_path_factory), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while not any('"epochs_run"' in p.read_text() for p in run_dir.glob("*/result.json")):
            assert time.monotonic() < deadline and driver.poll() is None, "the first trial never finished"
            time.sleep(0.5)
        driver.send_signal(signal.SIGINT)
        driver.wait(timeout=90)
    finally:
        if driver.poll() is None:
            driver.kill()
    return run_dir


def test_trial_and_epoch_frames_of_a_real_experiment(finished):
    exp = load(finished)
    trials = exp.trials
    assert len(trials) == exp.sweep["expected_trials"] == 4 and exp.never_started == 0
    assert set(trials["stop_reason"]) <= {"finished", "scheduler_stopped"}
    done = trials[trials["stop_reason"] == "finished"]
    stopped = trials[trials["stop_reason"] == "scheduler_stopped"]
    assert len(done) >= 1 and (done["epochs_run"] == 3).all() and done["test_acc"].notna().all()
    assert (done["latency_ms_b1"] > 0).all() and (done["params"] > 0).all() and (done["flops"] > 0).all()
    assert (stopped["last_epoch"] < 3).all() and stopped["test_acc"].isna().all()
    smoke = SPACES["smoke"]["params"]  # every trial's resolved config, from its trial_config.json
    assert set(trials["dataset"]) == {smoke["dataset"]} and set(trials["subset"]) == {smoke["subset"]}
    assert sorted(trials["attention"]) == ["channel", "channel", "none", "none"]
    assert set(trials["seed"]) == {0, 1}
    assert len(exp.epochs) == trials["last_epoch"].sum()
    last_epochs = trials.set_index("trial_id")["last_epoch"].to_dict()
    assert exp.epochs.groupby("trial_id")["epoch"].max().to_dict() == last_epochs
    for name in trials["trial_dir"]:  # TensorBoard's files, one per trial
        assert list((finished / name).glob("events.out.tfevents.*"))


def test_report_of_a_real_experiment(finished, tmp_path):
    out = tmp_path / "report"
    result = subprocess.run([sys.executable, "-m", "analysis.report", str(finished), "--out", str(out),
                             "--format", "tex"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    text = (out / "report.md").read_text()
    assert "## Trials" in text and "4 trials recorded of 4 expected" in text and "## Main effects on" in text
    assert "Interrupted" not in text and "unfinished" not in text.split("## Trials")[1].split("##")[0]
    for name in ("learning_curves.png", "loss_curves.png", "stopping.png", "pareto.png", "trials.csv",
                 "epochs.csv", "trial_outcomes.tex", "pareto.tex"):
        assert (out / name).stat().st_size > 0, name
    assert "\\begin{tabular}" in (out / "pareto.tex").read_text()


def test_notebook_executes_top_to_bottom(finished, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("ABLATION_RUN_DIR", str(finished))
    notebook = nbformat.read(ROOT / "analysis" / "trials.ipynb", as_version=4)
    assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code")  # committed clean
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "analysis")}}).execute()
    shown = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert sum("image/png" in o.get("data", {}) for o in shown) >= 4  # the figures rendered
    assert not [o for o in shown if o.output_type == "error"]


def test_report_of_an_interrupted_experiment_names_the_unfinished_trials(interrupted, tmp_path):
    exp = load(interrupted)
    unfinished = exp.unfinished
    assert (exp.trials["stop_reason"] == "finished").sum() == 1
    assert len(unfinished) + exp.never_started == 3 and len(unfinished) >= 1
    out = tmp_path / "report"
    result = subprocess.run([sys.executable, "-m", "analysis.report", str(interrupted), "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    text = (out / "report.md").read_text()
    assert "## Unfinished trials" in text and f"{len(unfinished)} trial(s) unfinished" in text
    for trial_id in unfinished["trial_id"]:
        assert trial_id in text
    if exp.never_started:
        assert f"{exp.never_started} never started" in text
