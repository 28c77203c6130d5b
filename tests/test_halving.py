"""Budget-aware successive halving, the default screen (sweep.planning.phases, study.trial.fit_to_budget,
study.selection, analysis.halving): the rungs as planned, each trial's schedule fitted to its rung's budget, and a real
two-rung sweep on CPU: the first rung's trials end their own compressed schedule (the learning rate
of a rung's last step is the schedule's final one, not a mid-schedule value), the best 1/eta arms are
retrained from scratch in the next rung, the record says which and why, and the report shows the rungs
with the first rung's effects. The driver SIGKILLed in either rung resumes to the same arms."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analysis.report import write_report
from study.config import TrainConfig
from study.layout import read_sweep, screen_rungs
from study.load import load
from study.selection import rung_keeps, screen_ranking
from study.trial import fit_to_budget
from sweep import run
from sweep.planning.phases import planned_rungs, rung_budgets
from tests.helpers import plan

ROOT = Path(__file__).resolve().parent.parent
# 2 arms (lr 0.05 learns, lr 0 cannot) x 1 seed; OneCycle over 4 epochs, so a first rung at 2 epochs
# and eta 2 keeps 1 arm and retrains it for all 4. At the first rung's 2 epochs lr 0.05 reached 58.8%
# validation accuracy against 11.8% at lr 0 (train.py, one thread, this Intel Xeon): a margin of about
# 47 points that another CPU's kernels cannot close (at 1,024 images it was 5 to 18 points).
SPACE = """params:
  dataset: synthetic
  subset: 1536
  val_fraction: 0.5
  width: 0.25
  batch_size: 32
  eval_batch_size: 512
  augment: none
  dropout: 0.0
  init: kaiming
  scheduler: onecycle
  measure_latency: false
  epochs: 4
  lr: {grid: [0.0, 0.05]}
"""
ARGV = ["--no-confirm", "--grace-period", "2", "--reduction-factor", "2"]
FINAL_ONECYCLE = 0.05 / 25 / 1e4  # torch's OneCycleLR ends at max_lr / div_factor / final_div_factor


def test_rungs_end_where_training_ends_and_keep_the_best_third():
    assert rung_budgets(9, 3, 3) == [3, 9] and rung_budgets(30, 10, 3) == [10, 30]
    assert rung_budgets(10, 2, 2) == [2, 4, 8, 10] and rung_budgets(4, 4, 3) == [4] == rung_budgets(4, 6, 3)
    assert [rung_keeps(n, 3) for n in (48, 16, 5, 2, 1)] == [16, 5, 1, 1, 1]
    rungs = planned_rungs([3, 9], 48)
    assert rungs == [{"dir": "screen", "budget": 3, "expected_trials": 48}, {"dir": "screen-9ep", "budget": 9}]


def test_a_rung_fits_every_budget_dependent_part_of_the_schedule():
    full = TrainConfig(epochs=9, scheduler="cosine", warmup_epochs=3.0, step_size=6, early_stop_patience=3,
                       finetune_epochs=5).to_dict()
    third = fit_to_budget(full, 3 / 9)
    assert (third["epochs"], third["warmup_epochs"], third["step_size"]) == (3, 1.0, 2)
    assert (third["early_stop_patience"], third["finetune_epochs"]) == (1, 2)
    assert fit_to_budget(full, 1.0) == full
    tiny = fit_to_budget({**full, "epochs": 10, "warmup_epochs": 8.0}, 0.14)  # rounds to 1 epoch
    assert tiny["epochs"] == 1 and tiny["warmup_epochs"] < 1 and TrainConfig.from_dict(tiny)  # still valid
    assert fit_to_budget({**full, "early_stop_patience": 0, "finetune_epochs": 0}, 1 / 3)["finetune_epochs"] == 0


def test_the_ablation_screens_by_successive_halving_unless_asked_for_asha(capsys):
    params, settings, record = plan(["--space", "ablation", "--epochs", "9"])
    assert settings.scheduler == "halving" and settings.budget == 3 and settings.points is None
    assert screen_rungs(record) == [{"dir": "screen", "budget": 3, "expected_trials": 48},
                                    {"dir": "screen-9ep", "budget": 9}]
    assert run.main(["--space", "ablation", "--epochs", "9", "--dry-run"]) == 0
    said = capsys.readouterr().out
    assert "rung 1: 48 arm(s) x 1 seed(s) x 3 epochs; rung 2: 16 arm(s) x 1 seed(s) x 9 epochs = 288 trial-epochs" in said
    asha = plan(["--space", "ablation", "--epochs", "9", "--scheduler", "asha"])
    assert "rungs" not in asha[2]["phases"]["screen"] and asha[1].budget == 0


@pytest.fixture(scope="module")
def halving(local_ray, tmp_path_factory):
    """The two-rung sweep, in this process."""
    tmp = tmp_path_factory.mktemp("halving")
    space = tmp / "halving.yaml"
    space.write_text(SPACE)
    code = run.main(["--space", str(space), *ARGV, "--storage-path", str(tmp), "--name", "sh"])
    return code, tmp / "sh", space


@pytest.mark.parametrize("search", ["random", "optuna"])
def test_sampled_searches_go_through_the_same_rungs(search, local_ray, tmp_path):
    """4 sampled configs for 1 epoch, the best 2 of them again from scratch for 2: the second rung runs
    exactly the first rung's best configs (floats sampled by Ray or proposed by Optuna, given back as
    points); Optuna's study holds the first rung's 4 trials only."""
    space = tmp_path / "sampled.yaml"
    space.write_text(SPACE.replace("lr: {grid: [0.0, 0.05]}", "lr: {loguniform: [1.0e-4, 0.1]}")
                     .replace("epochs: 4", "epochs: 2"))
    argv = ["--space", str(space), "--search", search, "--samples", "4", "--no-confirm", "--grace-period", "1",
            "--reduction-factor", "2", "--storage-path", str(tmp_path), "--name", search]
    assert run.main(argv) == 0
    if search == "optuna":
        import optuna

        study = optuna.load_study(study_name=search, storage=f"sqlite:///{tmp_path / search / 'optuna.db'}")
        assert len(study.trials) == 4
    screen = load(tmp_path / search).phase("screen")
    first, second = (screen.trials[screen.trials["rung"] == k] for k in (0, 1))
    assert len(first) == 4 and len(second) == 2 and set(second["epochs"]) == {2} and set(first["epochs"]) == {1}
    ranking = screen_ranking(first, screen.epochs, ["lr"])
    assert sorted(second["lr"]) == sorted(ranking["lr"].head(2))


def test_each_rung_ran_its_own_whole_schedule_and_promoted_the_learner(halving):
    code, experiment, _ = halving
    assert code == 0
    rungs = screen_rungs(read_sweep(experiment))
    assert [r["dir"] for r in rungs] == ["screen", "screen-4ep"] and rungs[1]["expected_trials"] == 1
    assert rungs[1]["arms"][0]["levels"] == {"lr": 0.05} and "rung 1 rank 1 of 2" in rungs[1]["arms"][0]["why"]
    screen = load(experiment).phase("screen")
    trials = screen.trials.set_index("trial_id")
    last = screen.epochs.sort_values("epoch").groupby("trial_id").last()
    for trial_id, trial in trials.iterrows():
        epochs = 2 if trial["rung"] == 0 else 4
        assert trial["epochs"] == epochs and last.loc[trial_id, "epoch"] == epochs  # trained from scratch
        assert trial["stop_reason"] == "finished"
        if trial["lr"] == 0.05:  # the last step of each rung's OneCycle is the schedule's end
            assert last.loc[trial_id, "last_lr"] == pytest.approx(FINAL_ONECYCLE, rel=1e-6)
    first = screen.epochs[screen.epochs["trial_id"].isin(trials.index[(trials["rung"] == 0) & (trials["lr"] == 0.05)])]
    assert first.sort_values("epoch")["last_lr"].iloc[0] > 100 * FINAL_ONECYCLE  # a rung's mid-schedule is not its end
    ranking = screen_ranking(screen.trials, screen.epochs, ["lr"])
    assert ranking["lr"].tolist() == [0.05, 0.0] and ranking["deepest_rung"].tolist() == [2, 1]
    config = json.loads(next((experiment / "screen").glob("*/trial_config.json")).read_text())["config"]
    assert config["epochs"] == 2  # recorded as run: train.py --config re-runs the rung's trial


def test_the_report_shows_the_rungs_and_the_first_rungs_effects(halving, tmp_path):
    _, experiment, _ = halving
    text = write_report(load(experiment), tmp_path / "report").read_text()
    assert "## Rungs of the screen" in text and "fitted to 2 of 4 epochs" in text
    # lr 0 cannot learn: left out of the first rung's effects, which then have one learner and no contrast
    assert "## Arms that did not learn" in text and "left out: lr=0.0" in text
    assert "No effects: fewer than two trials of arms that learned are left." in text
    # and the screen-only sweep's console says it at its end, from the first rung (every arm at one budget)
    from sweep.closing import did_not_learn

    line = did_not_learn(str(experiment))
    assert line.startswith("1 of 2 arms did not learn (no trial's best validation accuracy is shown above chance")
    assert line.endswith("and their 1 trial is left out of the report's effects: lr=0.0")


@pytest.mark.slow
@pytest.mark.parametrize("rung", ["screen", "screen-4ep"])
def test_a_driver_killed_in_either_rung_resumes_to_the_same_arms(rung, halving, tmp_path):
    """SIGKILL the CLI as soon as a trial of `rung` has reported an epoch, then --resume (a new CLI):
    the rungs, their arms and the trials' epochs are those of the uninterrupted run."""
    _, reference, space = halving
    experiment = tmp_path / "killed"
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    command = [sys.executable, "sweep/run.py", "--address", "local"]
    with (tmp_path / "first.log").open("w") as log:
        driver = subprocess.Popen([*command, "--space", str(space), *ARGV, "--storage-path", str(tmp_path),
                                   "--name", "killed"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not any(p.stat().st_size for p in (experiment / rung).glob("*/result.json")):
            assert driver.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"no epoch of {rung} in 300 s"
            time.sleep(0.05)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    resumed = subprocess.run([*command, "--resume", str(experiment)], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout
    want, got = screen_rungs(read_sweep(reference)), screen_rungs(read_sweep(experiment))
    assert [r.get("arms") and [a["levels"] for a in r["arms"]] for r in got] == \
           [r.get("arms") and [a["levels"] for a in r["arms"]] for r in want]
    screen = load(experiment).phase("screen")
    assert sorted(zip(screen.trials["rung"], screen.trials["lr"], screen.trials["stop_reason"])) == \
           [(0, 0.0, "finished"), (0, 0.05, "finished"), (1, 0.05, "finished")]
