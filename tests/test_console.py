"""The sweep console's pieces on plain frames and log records (a real sweep's console is checked in
test_analysis_experiment.py and test_reliability_sweep.py): progress and ETA, the outcome words for
every stop reason, the best trial and arm, Ray's chatter filtered and everything else kept."""
import logging

import pandas as pd
import pytest

from study.best import best_arm, best_trial, describe
from study.states import STOP_REASONS
from sweep.console import QUIET, count_outcomes, outcome_words, progress_line


def test_every_stop_reason_has_a_console_word():
    words = outcome_words("asha")
    assert set(words) == set(STOP_REASONS)
    assert words["scheduler_stopped"] == "stopped by ASHA" and words["unfinished"] == "interrupted"


def test_progress_counts_trials_and_estimates_the_time_left_from_ended_trials():
    frame = pd.DataFrame({"status": ["TERMINATED", "TERMINATED", "RUNNING"],
                          "outcome": ["finished", "stopped by ASHA", "running"], "time_total_s": [10.0, 20.0, 5.0]})
    line = progress_line(frame, total=5, elapsed=65, scheduler="asha")
    # 2 left at the mean 15 s, the running one 10 s from that mean, one trial at a time: 40 s
    assert line == ("5 trials: 2 done (1 finished, 1 stopped by ASHA), 1 running, 2 left; 1 min 05 s elapsed, "
                    "ETA ~40 s")
    assert count_outcomes(frame, "asha") == {"finished": 1, "stopped by ASHA": 1, "running": 1}


def test_the_eta_counts_down_between_reports_and_covers_the_whole_sweep():
    """The running trial reported 5 s of work at t=1000; 8 s later it has run 13 s, so 2 s are left of
    the 15 s mean, and 30 s of two trials left: 32 s. The phase was estimated at 60 s and ran at 97 s
    elapsed + 32 s: its pace (129 / 60) prices the 20 s the later phases were estimated at."""
    frame = pd.DataFrame({"status": ["TERMINATED", "TERMINATED", "RUNNING"], "outcome": ["finished"] * 2 + ["running"],
                          "time_total_s": [10.0, 20.0, 5.0], "timestamp": [990, 995, 1000]})
    at = {now: progress_line(frame, 5, 97, "asha", 60.0, 20.0, now=now) for now in (1000.0, 1008.0)}
    from study.cli import duration

    assert at[1000.0].endswith(f"ETA ~40 s; the sweep ~{duration(40 + 20 * 137 / 60)} (the phases after this one "
                               "at its pace)")
    assert at[1008.0].endswith(f"ETA ~32 s; the sweep ~{duration(32 + 20 * 129 / 60)} (the phases after this one "
                               "at its pace)")
    assert duration(40 + 20 * 137 / 60) != duration(32 + 20 * 129 / 60)  # it counted down
    pending = frame.assign(status="PENDING").iloc[:0]
    assert progress_line(pending, 5, 20, "asha", 60.0, 100.0).endswith(f"elapsed; the sweep ~{duration(140)} by its "
                                                                       "estimate")
    assert "sweep" not in progress_line(frame, 5, 97, "asha")  # no estimate: this phase's ETA only


def trials(rows):
    return pd.DataFrame(rows, columns=["trial_id", "stop_reason", "attention", "seed", "best_val_acc", "test_acc",
                                       "epochs_run"])


def test_one_best_trial_among_those_that_ended_and_the_best_arm_over_seeds():
    frame = trials([("a0", "finished", "none", 0, 70.0, 69.0, 3), ("a1", "finished", "none", 1, 60.0, 59.0, 3),
                    ("b0", "finished", "channel", 0, 68.0, 67.0, 3), ("b1", "finished", "channel", 1, 67.0, 66.0, 3),
                    ("c0", "scheduler_stopped", "eca", 0, 90.0, None, 1)])
    assert best_trial(frame)["trial_id"] == "a0"  # not the stopped c0: its figure is from 1 epoch
    arm = best_arm(frame, ["attention"])
    assert arm["levels"] == {"attention": "channel"} and arm["n"] == 2 and arm["best_val_acc"] == 67.5
    lines = describe(frame, ["attention"])
    assert lines[0].endswith("a0: best val 70.00%, test 69.00%, 3 epochs; attention=none")
    assert lines[1] == "best arm (mean over its 2 ended seeds): attention=channel: best val 67.50%, test 66.50%"
    assert best_arm(frame.iloc[[0, 2]], ["attention"]) is None  # one seed per arm: no arm line
    assert describe(frame.iloc[[4]], ["attention"])[0].endswith("none has ended yet")


@pytest.mark.parametrize("message, shown", [
    ("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled", False),
    ("Experiment has been interrupted, but the most recent state was saved.\nResume experiment with: "
     "Tuner.restore(path=...)", False),
    ("Experiment state snapshotting has been triggered multiple times in the last 5.0 seconds", False),
    ("Trial train_trial_00000 errored after 2 iterations", True),
    ("Experiment state snapshotting failed:", True),
])
def test_only_rays_known_chatter_is_filtered(message, shown):
    record = logging.LogRecord("ray.tune.tune", logging.WARNING, __file__, 1, message, None, None)
    assert QUIET.filter(record) is shown


def test_a_worker_killed_for_memory_is_said_to_be_out_of_memory():
    """Issue 37, class 13: Ray's memory monitor's error (raised for a task, or an actor it killed under
    memory pressure) reads "out of memory"; a worker that died otherwise says what may have killed it
    (the kernel's OOM kill itself is injected for real in test_reliability_sweep)."""
    from ray.exceptions import ActorDiedError, OutOfMemoryError

    from sweep.console import memory_cause, trial_error

    said = trial_error(OutOfMemoryError("Task was killed due to the node running low on memory."))
    assert said.startswith("out of memory: Ray's memory monitor killed its worker") and said.endswith(
        "; the epochs it reported are kept")
    died = ActorDiedError()
    assert memory_cause(died) is None and memory_cause(RuntimeError("no")) is None
    assert "when memory runs out, the kernel's OOM killer kills it" in trial_error(died)
    assert memory_cause(died, pid=2 ** 22 + 7) is None  # no kernel record of that pid


def test_the_did_not_learn_line_never_costs_the_summary(tmp_path):
    """sweep.closing.did_not_learn: an object store, or a directory the analysis cannot read, gives no line."""
    from sweep.closing import did_not_learn

    assert did_not_learn("s3://bucket/exp") == "" and did_not_learn(str(tmp_path / "nothing")) == ""


def test_a_path_below_the_working_directory_is_shown_relative(tmp_path, monkeypatch):
    from study.cli import shown

    monkeypatch.chdir(tmp_path)
    assert shown(tmp_path / "runs" / "sweeps" / "x") == "runs/sweeps/x"
    assert shown("/elsewhere/x") == "/elsewhere/x" and shown("s3://bucket/x") == "s3://bucket/x"
    assert shown("runs/x") == "runs/x"


def test_a_confirm_looks_table_names_no_best_of_its_own():
    """The confirm phase's answer is the screen's best arm over its fresh seeds (printed after each
    look); a look's own 'best trial' and 'best arm' would be a second best, with other numbers."""
    from types import SimpleNamespace

    from sweep.console import TrialTable

    class Trial(SimpleNamespace):
        def __str__(self) -> str:
            return f"trial_{self.trial_id}"

    def trial(i, attention, acc):
        result = {"epoch": 2, "val_acc": acc, "best_val_acc": acc, "test_acc": acc, "epochs_run": 2,
                  "status": "finished", "done": True}
        return Trial(trial_id=f"t{i}", status="TERMINATED", last_result=result, path="",
                     config={"attention": attention, "seed": i})

    trials = [trial(0, "none", 50.0), trial(1, "channel", 40.0), trial(2, "none", 45.0)]
    screen, look = (TrialTable(["attention", "seed"], "fifo", best_shown=shown) for shown in (True, False))
    assert "best trial (" in screen.status(trials, done=True) and "best arm (" in screen.status(trials, done=True)
    text = look.status(trials, done=True)
    assert "best trial" not in text and "best arm" not in text and "| trial_t0 " in text
    # a phase this driver first sees with ended trials is a resumed one: its pace against the phase's
    # estimate is not known (the time before the stop is not this driver's), so no whole-sweep ETA
    resumed = TrialTable(["attention", "seed"], "fifo", estimated_s=60.0, later_s=20.0)
    assert "the sweep" not in resumed.status(trials, done=False)
    fresh = TrialTable(["attention", "seed"], "fifo", estimated_s=60.0, later_s=20.0)
    pending = [trial(i, "none", 0.0) for i in range(2)]
    for t in pending:
        t.status, t.last_result = "PENDING", {}
    assert "the sweep ~1 min 20 s by its estimate" in fresh.status(pending, done=False)
    assert "the sweep ~" in fresh.status(trials, done=False)  # the same phase, its trials since ended
