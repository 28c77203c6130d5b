"""The analysis on real Ray Tune experiments run here by `sweep/run.py`: a finished one (ASHA over
attention x 2 seeds, 3 epochs) loaded, reported (an early-training screen; no effects when recorded
as an Optuna search) and walked through by the notebook, an interrupted one (Ctrl-C after the first
trial) whose report names the unfinished trials, and a real Fashion-MNIST grid run to the end whose
report holds the factorial tables."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from analysis.report import main as report_main
from study.load import load
from sweep.spaces import SPACES
from tests.helpers import FASHION_MNIST, NO_FASHION_MNIST

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
    """The sweep, its console (stdout and stderr, as a terminal shows them) in console.log beside it."""
    storage = tmp_path_factory.mktemp("sweeps")
    with (storage / "console.log").open("w") as console:
        subprocess.run([*SWEEP, "--grace-period", "1", "--reduction-factor", "2", "--set", "measure_latency=true",
                        "--storage-path", str(storage), "--name", "smoke"], cwd=ROOT, env=sweep_env(tmp_path_factory),
                       check=True, stdout=console, stderr=subprocess.STDOUT, timeout=240)
    return storage / "smoke"


def final_table(console: str) -> list[list[str]]:
    """The cells of the last trial table the console printed (Ray's psql style)."""
    blocks = console.split("== ")[-1].split("\n")
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in blocks
            if line.startswith("| train_trial_")]


def test_the_console_speaks_the_reports_words_and_names_one_best(finished, tmp_path):
    """ASHA-stopped trials read 'stopped by ASHA' in the live table and the summary (never Ray's
    TERMINATED beside our 'running'); the summary counts every outcome; the best trial and best arm
    are the report's, by one rule; no traceback and no Ray log line in a successful run."""
    console = (finished.parent / "console.log").read_text()
    trials = load(finished).trials.set_index("trial_id")
    words = {"finished": "finished", "scheduler_stopped": "stopped by ASHA"}
    rows = final_table(console)
    assert len(rows) == 4 and "TERMINATED" not in console and "Current best trial" not in console
    for row in rows:
        trial_id = row[0].removeprefix("train_trial_")
        assert row[1] == words[trials.loc[trial_id, "stop_reason"]], row
    counts = trials["stop_reason"].map(words).value_counts()
    assert "== " in console and "4 trials: 4 done (" in console and ", 0 running, 0 left; " in console
    summary = next(line for line in console.splitlines() if line.startswith("4 trials: "))
    for word, n in counts.items():
        assert f"{n} {word}" in summary, summary
    arm_with_two = (trials[trials["stop_reason"] == "finished"]["attention"].value_counts() >= 2).any()
    last = [line for line in console.splitlines() if line.startswith(("best trial", "best arm"))][-1]
    assert last.startswith("best arm (mean over its 2 ended seeds)" if arm_with_two else "best trial (")
    report = subprocess.run([sys.executable, "-m", "analysis.report", str(finished), "--out", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    opening = (tmp_path / "report.md").read_text().split("## Trials")[1]
    summary_best = [line for line in console.splitlines()[console.splitlines().index(summary):]
                    if line.startswith(("best trial", "best arm"))]
    assert summary_best and all(line in opening for line in summary_best), (summary_best, opening[:1500])
    assert "Traceback" not in console and " WARNING " not in console and " INFO " not in console, console
    assert "Tuner.restore" not in console and "Token authentication" not in console


def test_train_py_reruns_a_sweep_trial_to_the_same_metrics(finished, tmp_path):
    """`train.py --config TRIAL_DIR` re-runs a trial of the sweep: its recorded config holds the
    threads, device and precision the trial ran with, so on CPU every metric comes out the same."""
    trials = load(finished).trials
    trial = trials[trials["stop_reason"] == "finished"].iloc[0]
    record = json.loads((finished / trial["trial_dir"] / "trial_config.json").read_text())["config"]
    assert (record["threads"], record["device"], record["precision"]) == (1, "cpu", "fp32")
    result = subprocess.run([sys.executable, "train.py", "--config", str(finished / trial["trial_dir"]),
                             "--out-dir", str(tmp_path / "rerun"), "--quiet"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rerun = json.loads((tmp_path / "rerun" / "summary.json").read_text())
    for key in ("best_val_acc", "final_val_acc", "test_acc", "test_loss", "epochs_run", "params"):
        assert rerun[key] == trial[key], key


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
        while not any('"epochs_run"' in p.read_text() for p in run_dir.glob("screen/*/result.json")):
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
    assert "## Trials" in text and "4 trials recorded of 4 expected" in text
    # ASHA stopped trials: effects only as an early-training screen at the epoch every trial reached
    assert "## Main effects on val_acc_at_epoch (early-training screen, not final accuracy)" in text
    assert "## Main effects on test_acc" not in text and "| p_holm |" in text.replace("   ", " ").replace("  ", " ")
    assert "Exact ANOVA variance shares of val_acc_at_epoch on a balanced grid" in text  # 2 arms x 2 seeds
    assert "Interrupted" not in text and "unfinished" not in text.split("## Trials")[1].split("##")[0]
    for name in ("learning_curves.png", "loss_curves.png", "stopping.png", "pareto.png", "trials.csv",
                 "epochs.csv", "trial_outcomes.tex", "pareto.tex"):
        assert (out / name).stat().st_size > 0, name
    assert "\\begin{tabular}" in (out / "pareto.tex").read_text()


def test_report_refuses_effects_for_an_optuna_sweep(finished, tmp_path):
    """The same trials, recorded as drawn by Optuna: no effects, one sentence why, the best trials."""
    copy = tmp_path / "tpe"
    shutil.copytree(finished, copy, ignore=shutil.ignore_patterns("report"))
    record = json.loads((copy / "sweep.json").read_text())
    record["plan"]["search"] = "optuna"
    (copy / "sweep.json").write_text(json.dumps(record))
    assert report_main([str(copy)]) == 0  # in this process: the tests above run the report as a CLI
    text = (copy / "report" / "report.md").read_text()
    assert "No factorial effects: this sweep drew its configurations by optuna search" in text
    assert "## Best trials by validation accuracy" in text and "## Main effects" not in text


@pytest.mark.skipif(FASHION_MNIST is None, reason=NO_FASHION_MNIST)
def test_report_of_a_real_fashion_mnist_grid(tmp_path_factory, tmp_path):
    """attention x recipe x 2 seeds on real images, every trial run to the end (FIFO): the factorial
    tables on test accuracy (paired over the two seeds), the interaction verdicts, the exact ANOVA
    shares of a balanced grid, and the verdict sentences."""
    storage = tmp_path_factory.mktemp("sweeps")
    space = tmp_path / "grid.yaml"
    # 16x16 (resized): a quarter of the compute of 32x32 per image; the tables do not depend on it. Every
    # arm must learn (study.learning leaves arms at chance out of the effects): 1,024 images, batch 16,
    # 3 epochs gave 32-55% best validation accuracy (floor ~19% on 341 images); 512 images, batch 32 and
    # 2 epochs left 3 of the 4 arms at chance
    space.write_text("scheduler: fifo\nparams:\n  dataset: fashion-mnist\n  image_size: 16\n  subset: 1024\n"
                     "  val_fraction: 0.25\n  width: 0.25\n  batch_size: 16\n  measure_latency: false\n  epochs: 3\n"
                     "  attention: {grid: [none, channel]}\n  recipe: {grid: [baseline, holistic]}\n")
    subprocess.run([sys.executable, "sweep/run.py", "--space", str(space), "--no-confirm", "--samples", "2",
                    "--storage-path", str(storage), "--name", "grid"], cwd=ROOT, env=sweep_env(tmp_path_factory), check=True,
                   capture_output=True, timeout=400)
    out = tmp_path / "report"
    assert report_main([str(storage / "grid"), "--out", str(out), "--format", "csv"]) == 0
    text = (out / "report.md").read_text()
    assert "## Main effects on test_acc" in text and "early-training screen" not in text
    assert "recipe × attention (full factorial) + seed as a block; n = 8 trials, residual df = 3" in text
    main = pd.read_csv(out / "main_effects.csv").set_index("factor")
    assert list(main.index) == ["recipe", "attention"] and (main["n"] == 4).all() and (main["n_ref"] == 4).all()
    assert (main["ci_low"] < main["effect"]).all() and (main["p_holm"] >= main["p"]).all()
    assert set(main["method"]) == {"paired"} and set(main["seeds"]) == {2}
    inter = pd.read_csv(out / "interactions.csv")
    assert list(inter["factor"]) == ["attention"] and inter["verdict"].iloc[0] in effects_verdicts()
    assert "Exact ANOVA variance shares of test_acc on a balanced grid" in text and "## Verdicts" in text
    assert "- attention=channel (against none) changes test_acc: **" in text


def effects_verdicts() -> set[str]:
    return {"supported", "not supported", "inconclusive"}


def test_report_of_an_interrupted_experiment_names_the_unfinished_trials(interrupted, tmp_path):
    exp = load(interrupted)
    unfinished = exp.unfinished
    ended = exp.trials["stop_reason"].isin(["finished", "scheduler_stopped"]).sum()
    # the driver may start the next trial (which ASHA may stop, or which may end too) before it handles
    # the SIGINT: one full run of the suite saw two finished trials
    assert (exp.trials["stop_reason"] == "finished").sum() >= 1
    assert ended + len(unfinished) + exp.never_started == 4 and len(unfinished) >= 1
    out = tmp_path / "report"
    assert report_main([str(interrupted), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "## Unfinished trials" in text and f"{len(unfinished)} trial(s) unfinished" in text
    for trial_id in unfinished["trial_id"]:
        assert trial_id in text
    if exp.never_started:
        assert f"{exp.never_started} never started" in text


def test_export_chooses_on_validation_from_a_real_experiment(finished):
    """deploy.export's --best and --front on a real ASHA sweep: only trials that ran to their end, by
    best validation accuracy (never test), the front checked against a brute force."""
    from deploy import choose as export
    from study.config import UserError

    trials = load(finished).trials
    ended = trials[trials["stop_reason"] == "finished"]
    best = export.choose(finished, [], True, False, "flops")
    assert [s.name for s in best] == [ended.sort_values("best_val_acc", ascending=False)["trial_id"].iloc[0]]
    rows = ended.to_dict("records")
    front = {r["trial_id"] for r in rows
             if not any(o["best_val_acc"] >= r["best_val_acc"] and o["flops"] <= r["flops"]
                        and (o["best_val_acc"] > r["best_val_acc"] or o["flops"] < r["flops"]) for o in rows)}
    assert {s.name for s in export.choose(finished, [], False, True, "flops")} == front
    stopped = trials[trials["stop_reason"] == "scheduler_stopped"]["trial_id"].tolist()
    if stopped:  # a trial ASHA stopped can still be exported by name (its best weights so far)
        (chosen,) = export.choose(finished, stopped[:1], False, False, "flops")
        assert chosen.checkpoint.is_file() and chosen.reported_test_acc is None
    with pytest.raises(UserError, match="no trial nope"):
        export.choose(finished, ["nope"], False, False, "flops")
