"""Screen, then confirm, as the analysis reads it: a phased experiment (sweep.json's ``phases``, each
phase a Ray Tune experiment directory below it) loaded whole and phase by phase, the confirm phase's
numbers (analysis.confirm.confirmed) and the report's sections. Hand-built directories (every way a
trial can end, in both phases) for the edge cases; a real one, run by `sweep/run.py`, is read in
tests/test_sweep_confirm.py."""
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import confirm
from analysis.render import Section
from analysis.report import sections, write_report
from analysis.verdicts import verdict_section
from study.load import Experiment, ExperimentError, load
from study.questions import declare
from tests.helpers import write_experiment

CONFIRM_SPEC = {"dir": "confirm", "top": 1, "seeds": [0], "factors": ["attention"],
                "references": {"attention": "none"},
                "arms": [{"levels": {"attention": "channel"}, "why": "screen rank 1"},
                         {"levels": {"attention": "none"}, "why": "without attention=channel (-> none)"}],
                "expected_trials": 9}


def renamed_copy(source: Path, target: Path, old: str, new: str) -> None:
    """A copy of an experiment directory with every trial id's `old` prefix made `new` (each phase is
    its own Ray experiment, with its own ids)."""
    shutil.copytree(source, target)
    for path in sorted(target.rglob("*"), key=lambda p: -len(p.parts)):
        if path.is_file():
            path.write_text(path.read_text().replace(old, new))
        if old in path.name:
            path.rename(path.with_name(path.name.replace(old, new)))


def write_phased(path: Path, confirm_spec: dict | None = CONFIRM_SPEC, smoke: bool = False,
                 confirm_ran: bool = True) -> Path:
    """Both phases from test_analysis_load's hand-built experiment (7 trials each, every way to end),
    their own sweep.json removed, the top one with the phases block (the confirm phase's directory
    only when it `confirm_ran`)."""
    screen = write_experiment(path / "screen")
    (screen / "sweep.json").unlink()
    phases = {"screen": {"dir": "screen", "expected_trials": 8}}
    if confirm_spec is not None:
        phases["confirm"] = confirm_spec
    if confirm_spec is not None and confirm_ran:
        renamed_copy(screen, path / "confirm", "aaaaa", "bbbbb")
    plan = {"search": "grid", "scheduler": "asha", "max_t": 30, "smoke": smoke, "phase_dir": "screen"}
    (path / "sweep.json").write_text(json.dumps({"space_name": "toy", "expected_trials": 8, "plan": plan,
                                                 "params": {"attention": {"grid": ["none", "channel"]}},
                                                 "phases": phases}))
    return path


def test_a_phased_experiment_loads_every_phase_and_each_phase_alone(tmp_path):
    exp = load(write_phased(tmp_path / "exp"))
    assert exp.trials.groupby("phase").size().to_dict() == {"screen": 7, "confirm": 7}
    assert list(exp.trials.columns[:3]) == ["trial_id", "phase", "stop_reason"]
    screen, confirm_view = exp.phase("screen"), exp.phase("confirm")
    assert set(screen.trials["trial_id"].str[:5]) == {"aaaaa"} and set(confirm_view.trials["trial_id"].str[:5]) == {"bbbbb"}
    assert set(screen.epochs["trial_id"]) <= set(screen.trials["trial_id"]) and len(screen.epochs) == 6
    assert len(exp.epochs) == len(screen.epochs) + len(confirm_view.epochs)
    # Each phase against its own expected trials: 8 - 7 and 9 - 7.
    assert (screen.never_started, confirm_view.never_started, exp.never_started) == (1, 2, 3)
    assert len(exp.unfinished) == 6 and len(screen.unfinished) == 3
    assert screen.path == exp.path / "screen" and screen.phases == {} and screen.sweep["plan"]["scheduler"] == "asha"
    assert "plan" not in confirm_view.sweep  # the top plan is the screen's
    # A phase's own directory (no sweep.json of its own) loads as that phase's view of the whole.
    alone = load(exp.path / "confirm")
    assert alone.path == confirm_view.path and alone.trials.equals(confirm_view.trials)
    assert alone.never_started == 2
    with pytest.raises(ValueError, match="unknown phase"):
        exp.phase("final")


def test_a_phase_without_its_directory_yet_and_the_smoke_flag_of_the_top_plan(tmp_path):
    spec = {k: v for k, v in CONFIRM_SPEC.items() if k not in ("arms", "expected_trials")}
    exp = load(write_phased(tmp_path / "exp", smoke=True))
    pending = exp.trials.set_index("trial_id").loc["aaaaa_00004"]  # never started: its Ray config resolved
    assert pending["width"] == 0.25  # smoke_limits, as the trainable would have applied them
    exp = load(write_phased(tmp_path / "before", confirm_spec=spec, confirm_ran=False))
    assert set(exp.trials["phase"]) == {"screen"} and exp.phase("confirm").trials.empty
    assert exp.never_started == 1  # the confirm phase's count is not known yet
    assert confirm.confirmed(exp) is None and confirm.screen_table(exp) is None
    text = "\n".join(s.text for s in sections(exp))
    assert "Confirm (`" in text and "(how many: not yet chosen)" in text
    assert "The screen has not chosen the arms to confirm yet." in text


def test_a_confirm_phase_run_again_reads_its_own_directory(tmp_path):
    """`run.py --confirm EXP` again: phases.confirm is the new run (confirm-2), the earlier one kept in
    the driver's record under earlier_confirms and not read as a phase."""
    path = write_phased(tmp_path / "exp", {**CONFIRM_SPEC, "dir": "confirm-2"}, confirm_ran=False)
    renamed_copy(path / "screen", path / "confirm-2", "aaaaa", "ccccc")
    record = json.loads((path / "sweep.json").read_text())
    record["phases"]["earlier_confirms"] = [{**CONFIRM_SPEC, "dir": "confirm"}]
    (path / "sweep.json").write_text(json.dumps(record))
    exp = load(path)
    assert set(exp.phases) == {"screen", "confirm"} and "earlier_confirms" in exp.sweep["phases"]
    assert set(exp.phase("confirm").trials["trial_id"].str[:5]) == {"ccccc"}
    assert load(path / "confirm-2").path == path / "confirm-2"


def test_legacy_experiments_are_one_screen_phase(tmp_path):
    exp = load(write_experiment(tmp_path / "legacy"))
    assert set(exp.trials["phase"]) == {"screen"} and exp.phases == {}
    assert exp.phase("screen").trials.equals(exp.trials) and exp.phase("confirm").trials.empty
    assert [s.title for s in sections(exp)][:3] == ["What was trained", "Trials", "Unfinished trials"]
    assert "trial_outcomes" in [s.name for s in sections(exp)]
    assert "n" in sections(exp)[1].table.columns


def test_confirmed_uses_only_confirm_trials_that_ran_to_their_end_and_counts_the_rest(tmp_path):
    """The hand-built confirm phase: one finished and one diverged trial (both attention=none: one arm,
    n = 2), the rest left out by reason; the screen's best (channel) never ended: its question has no
    pair, so no estimate and no verdict but open."""
    exp = load(write_phased(tmp_path / "exp"))
    result = confirm.confirmed(exp)
    assert result.n == 2 and list(result.means["arm"]) == ["attention=channel", "attention=none"]
    assert list(result.means["n"]) == [0, 2]
    expected = exp.phase("confirm").trials.set_index("trial_id").loc[["bbbbb_00000", "bbbbb_00005"], "test_acc"]
    assert result.means.loc[1, "mean"] == pytest.approx(expected.mean())
    assert result.excluded == {"scheduler_stopped": 1, "errored": 1, "unfinished": 3}
    assert result.never_started == 2
    assert result.note == ("n = 2 confirm trials that ran to their end; left out: 1 scheduler_stopped, 1 errored, "
                           "3 unfinished, 2 never started")
    question = result.questions.iloc[0]
    assert question["n"] == 0 and question["verdict"].startswith("inconclusive") and np.isnan(question["low"])
    assert "the screen's best arm, attention=channel, has no confirm trial that ran to its end" in result.line
    assert result.means.loc[1, "why"] == "without attention=channel (-> none)"


def frames_experiment(tmp_path: Path, rows: list[tuple], references: dict | None) -> Experiment:
    """An Experiment straight from frames: confirm trials (attention, seed, test_acc), all finished."""
    trials = pd.DataFrame([{"trial_id": f"c{i}", "phase": "confirm", "stop_reason": "finished", "attention": a,
                            "seed": s, "test_acc": t, "best_val_acc": t + 1} for i, (a, s, t) in enumerate(rows)])
    spec = {**CONFIRM_SPEC, "references": references, "expected_trials": len(rows)}
    sweep = {"phases": {"screen": {"dir": "screen"}, "confirm": spec}}
    return Experiment(tmp_path, trials, pd.DataFrame(columns=["trial_id", "epoch", "val_acc"]), ("attention", "seed"),
                      sweep)


def test_an_arm_with_one_trial_has_no_interval_and_a_question_with_one_pair_no_verdict(tmp_path):
    rows = [("channel", 1, 80.0), ("channel", 2, 82.0), ("channel", 3, 81.0), ("none", 1, 78.0)]
    result = confirm.confirmed(frames_experiment(tmp_path, rows, {"attention": "none"}))
    means = result.means.set_index("arm")
    assert means.loc["attention=none", "n"] == 1 and np.isnan(means.loc["attention=none", "ci_low"])
    assert means.loc["attention=channel", "ci_low"] < 81.0 < means.loc["attention=channel", "ci_high"]
    # Paired by seed: seed 1 is the only pair, so the difference is 80 - 78 exactly, with no interval.
    question = result.questions.iloc[0]
    assert question["estimate"] == pytest.approx(2.0) and question["n"] == 1 and np.isnan(question["low"])
    assert question["claim"] == "removing attention=channel (-> none) from the screen's best arm costs test accuracy"
    unreferenced = confirm.confirmed(frames_experiment(tmp_path, rows, None)).questions.iloc[0]
    assert unreferenced["claim"] == "the screen's best arm is better than attention=none"  # a random screen's
    titles = [s.title for s in sections(load(write_phased(tmp_path / "random", {**CONFIRM_SPEC, "references": None})))]
    assert "Confirmed arms (fresh seeds, run to the end)" in titles and "Declared questions (the confirm phase's claims)" in titles
    assert not any(t.startswith("Leave-one-out") for t in titles)


def test_a_reports_frames_load_as_the_experiment(tmp_path):
    """trials.csv, epochs.csv and sweep.json beside report.md: the same frames and the same report
    again without the trials' files (every way a trial can end, both phases)."""
    exp = load(write_phased(tmp_path / "exp"))
    first = write_report(exp, tmp_path / "report")
    again = load(first.parent)
    assert again.path == first.parent and again.sweep == exp.sweep and again.config_columns == exp.config_columns
    pd.testing.assert_frame_equal(again.trials, exp.trials, check_dtype=False)
    pd.testing.assert_frame_equal(again.epochs, exp.epochs, check_dtype=False)
    blocks = [[line for line in path.read_text().splitlines() if line.startswith(("## ", "|"))]
              for path in (first, write_report(again, tmp_path / "again"))]
    assert blocks[0] == blocks[1] and any(line.startswith("|") for line in blocks[0])
    (first.parent / "epochs.csv").write_text("not,a frame\n")
    with pytest.raises(ExperimentError, match="not a report's frames"):
        load(first.parent)


def test_a_space_without_a_confirm_phase_reports_its_screen_without_the_confirm_wording(tmp_path):
    """stages and resnet-depth (confirm: false) record only a screen phase: no 'Screen, then confirm'."""
    exp = load(write_phased(tmp_path / "exp", confirm_spec=None))
    text = sections(exp)[1].text
    assert "Screen (`" in text and "Screen, then confirm" not in text and "Screen ranking" not in text


def test_a_cap_raised_after_the_last_look_reads_the_questions_again_and_says_what_it_costs(tmp_path):
    """A confirm phase whose questions stopped at a cap of 3, the cap then raised to 12 (sweep/run.py
    --confirm EXP --max-seeds 12) before any seed more ran: the report reads the questions again under
    the new cap (a row of the looks with no seeds), and its design sentence and the verdicts' text say
    the chance of a false claim is then at most about 2 x alpha. A phase continued from before questions
    were declared says when they were."""
    rows = [(a, s, 80.0 + s * (a == "channel") + 0.3 * s * s) for a in ("channel", "none") for s in (1, 2, 3)]
    spec = {**CONFIRM_SPEC, "seeds": [1, 2, 3], "max_seeds": 3, "margin": 0.5, "alpha": 0.05,
            "looks": [{"dir": "confirm", "seeds": [1, 2, 3], "arms": [0, 1], "cap": 3}]}
    exp = frames_experiment(tmp_path, rows, {"attention": "none"})
    at_cap = confirm.confirmed(Experiment(exp.path, exp.trials, exp.epochs, exp.axes,
                                          {"phases": {**exp.sweep["phases"], "confirm": spec}}))
    assert list(at_cap.looks["look"]) == [1] and at_cap.questions.iloc[0]["state"] == "cap" and at_cap.error == 0.05
    raised = {**spec, "max_seeds": 12, "declared_after": 3,
              "questions": declare(spec["arms"], ["attention"], {"attention": "none"}, 0.5)}
    result = confirm.confirmed(Experiment(exp.path, exp.trials, exp.epochs, exp.axes,
                                          {"phases": {**exp.sweep["phases"], "confirm": raised}}))
    assert list(result.looks["look"]) == [1, 2] and list(result.looks["cap"]) == [3, 12]
    assert result.looks.iloc[1]["seeds"].startswith("none") and result.looks.iloc[1]["trials"] == 0
    question = result.questions.iloc[0]
    assert question["state"] in ("open", "futile") and question["look"] == 2  # read again under the new cap
    assert "the cap was raised from 3 to 12" in result.design and "at most about 0.1, not 0.05" in result.design
    assert "declared after its first 3 seeds had run" in result.design
    assert result.error == pytest.approx(0.1)
    verdicts = verdict_section([Section("Declared questions", "", "questions", result.questions)], 0.5, result.error)
    assert "keep the chance of any false claim at most about 0.1)" in verdicts.text
