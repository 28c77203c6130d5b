"""Screen, then confirm, through sweep/run.py with real Ray Tune runs on CPU (sweep.planning).

A space built so that part of the answer holds by construction: `lr` in {0, 0.05} (the reference is
the first level, 0: the weights never move, so those arms stay at their initialisation's accuracy,
about chance) x `attention` in {none, channel}. Everything here that depends on how well a real
training run turns out is either true by construction (an arm at lr 0 cannot learn; one at lr 0.05
learns something on every seed: 24% to 67% test accuracy seen on an AMD EPYC and an Intel Xeon, chance
10%), or checked as arithmetic on the frames the run left (the cost is the mean of the per-seed
differences, its interval their t interval, the report's sentence the table's verdict). How large the
cost comes out, and so whether three seeds show it, varies between CPUs (an interval from -4.4 on
the AMD machine where Intel's excluded 0): a planted frame checks the verdict instead. The screen's
best arm has lr 0.05, so its leave-one-out neighbours are known (lr set back to 0; attention set back
to none if the best has channel). Then: the confirm phase run again on the same screen with other K/S
(`--confirm DIR`), the driver SIGKILLed in the screen and again in the confirm phase and resumed, and
the flags' one-line errors.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from analysis.confirm import confirmed, screen_table
from analysis.report import sections, write_report
from study.load import load
from study.selection import arm_label
from sweep import run
from tests.helpers import assert_notebook_is_the_report, execute_notebook

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow
KNOWN = """params:
  dataset: synthetic
  subset: 1024
  val_fraction: 0.25
  width: 0.25
  epochs: 3
  batch_size: 32
  eval_batch_size: 512
  augment: none
  dropout: 0.0
  init: kaiming
  scheduler: none
  measure_latency: false
  lr: {grid: [0.0, 0.05]}
  attention: {grid: [none, channel]}
"""


@pytest.fixture(scope="module")
def known(local_ray, tmp_path_factory):
    """One command: the screen (4 arms, seed 0, successive halving), then the confirm phase (top 2, the leave-one-out
    neighbours of the best, the all-reference arm; 3 fresh seeds each at the first look, then a look per seed for
    the arms of open questions, up to 5)."""
    tmp = tmp_path_factory.mktemp("confirm")
    space = tmp / "known.yaml"
    space.write_text(KNOWN)
    argv = ["--space", str(space), "--grace-period", "1", "--confirm-top", "2", "--confirm-seeds", "3",
            "--max-seeds", "5", "--storage-path", str(tmp), "--name", "known"]
    return run.main(argv), tmp / "known"


def record(experiment: Path) -> dict:
    return json.loads((experiment / "sweep.json").read_text())


def test_screen_then_confirm_in_one_command(known, capsys):
    code, experiment = known
    assert code == 0
    phases = record(experiment)["phases"]
    assert phases["screen"]["expected_trials"] == 4 and phases["confirm"]["seeds"] == [1, 2, 3]  # never seed 0
    arms = phases["confirm"]["arms"]
    best = arms[0]["levels"]
    assert best["lr"] == 0.05 and arms[0]["why"].startswith("screen rank 1")
    neighbours = [{**best, "lr": 0.0}] + ([{**best, "attention": "none"}] if best["attention"] != "none" else [])
    levels = [a["levels"] for a in arms]
    assert all(n in levels for n in neighbours)
    assert {"lr": 0.0, "attention": "none"} in levels and "all-reference baseline" in arms[levels.index(
        {"lr": 0.0, "attention": "none"})]["why"]
    looks = phases["confirm"]["looks"]
    assert looks[0]["seeds"] == [1, 2, 3] and looks[0]["arms"] == list(range(len(arms))) and len(looks) <= 3
    assert [look["seeds"] for look in looks[1:]] == [[4], [5]][:len(looks) - 1] and all("answers" in look for look in looks)
    run = sum(len(look["arms"]) * len(look["seeds"]) for look in looks)
    assert phases["confirm"]["expected_trials"] == 3 * len(arms) and sum(l["expected_trials"] for l in looks) == run
    questions = phases["confirm"]["questions"]  # declared before the confirm phase ran, each once
    assert len({q["id"] for q in questions}) == len(questions) >= len(arms) - 1
    exp = load(experiment)
    # the screen by successive halving: 4 arms for 1 epoch, then the best ⌊4/3⌋ = 1 again for all 3
    assert exp.trials.groupby("phase").size().to_dict() == {"screen": 4 + 1, "confirm": run}
    rungs = phases["screen"]["rungs"]
    assert [r["budget"] for r in rungs] == [1, 3] and rungs[1]["arms"][0]["levels"] == best
    assert exp.never_started == 0 and exp.unfinished.empty
    view = exp.phase("confirm")
    assert set(view.trials["stop_reason"]) == {"finished"} and set(view.trials["seed"]) <= {1, 2, 3, 4, 5}
    assert view.epochs.groupby("trial_id")["epoch"].max().eq(3).all()
    assert load(experiment / "screen").trials.equals(exp.phase("screen").trials)
    # the screen skips the test pass and the latency timing (only the confirm phase's test accuracy is read)
    screen = exp.phase("screen").trials
    assert screen["test_acc"].isna().all() and view.trials["test_acc"].notna().all()
    assert "latency_ms_b1" not in screen or screen["latency_ms_b1"].isna().all()
    for phase in ("screen", "confirm"):  # TensorBoard shows both phases
        assert list((experiment / phase).glob("*/events.out.tfevents.*"))


def test_the_confirm_numbers_and_the_report_on_the_known_space(known, tmp_path):
    from scipy import stats

    from study import sequential

    _, experiment = known
    exp = load(experiment)
    result = confirmed(exp)
    trials = exp.phase("confirm").trials
    labels = pd.Series([arm_label(a, result.factors) for a in trials[result.factors].to_dict("records")],
                       index=trials.index)
    assert result.n == len(trials) and result.note.endswith("none left out")
    for row in result.means.to_dict("records"):  # test accuracy of the confirm trials, per arm
        assert row["n"] >= 3 and row["mean"] == pytest.approx(trials.loc[labels == row["arm"], "test_acc"].mean())
    # Removing lr 0.05 from the best arm: paired by seed, the estimate is the mean over its seed pairs of
    # best - neighbour, its repeated interval estimate +- boundary x their standard error, the boundary at
    # least the one-look Bonferroni t quantile; lr 0 cannot learn, so every seed shows a cost.
    row = result.questions[result.questions["roles"].str.contains("without lr=0.05")].iloc[0]
    by_seed = trials.assign(arm=labels).pivot(index="seed", columns="arm", values="test_acc")
    best = arm_label(result.best, result.factors)
    neighbour = arm_label({**result.best, "lr": 0.0}, result.factors)
    differences = (by_seed[best] - by_seed[neighbour]).dropna().iloc[:row["n"]]
    assert (differences > 0).all() and row["n"] == len(differences) >= 3
    assert row["estimate"] == pytest.approx(differences.mean())
    half = row["boundary"] * stats.sem(differences)
    assert (row["low"], row["high"]) == (pytest.approx(row["estimate"] - half), pytest.approx(row["estimate"] + half))
    level = 0.05 / len(result.questions)
    assert row["boundary"] >= sequential.t_boundary(stats.norm.isf(level / 2), row["n"] - 1) - 1e-9
    assert result.line.startswith("the screen's best arm lr=0.05")

    text = write_report(exp, tmp_path / "report").read_text()
    titles = [line[3:] for line in text.splitlines() if line.startswith("## ")]
    assert titles[titles.index("Screen ranking"):] == [
        "Screen ranking", "Declared questions (the confirm phase's claims)", "Looks of the confirm phase",
        "Confirmed arms (fresh seeds, run to the end)", "Screen rank against the confirmed accuracy",
        "Per-class test accuracy of the confirmed arms"] and "Unfinished trials" not in titles
    assert titles[:3] == ["What was trained", "Trials", "Verdicts"]
    said = row["verdict"].split(":")[0]  # the sentence reads the table's verdict
    assert f"- Removing lr=0.05 (-> 0.0) from the screen's best arm costs test accuracy: **{said}**" in text
    trained = text.split("## ")[1]
    assert "| dataset        | synthetic at 32x32" in trained and "| seeds          | 0" in trained
    overview = text.split("## ")[2]
    # one best: the screen's best arm, with the trial that export --best takes; no screen's "best trial" line
    assert f"**The best:** {result.line.splitlines()[0]}" in overview
    assert not [line for line in overview.splitlines() if line.startswith(("best trial", "best arm"))]
    assert f"python -m deploy.export {experiment} --best" in overview
    # nothing learns at lr 0: those arms are left out of the screen's effects, named and tested for staying at chance
    assert "Arms that did not learn" in titles and "Exploratory: lr=0.0 attention=none stays within 5 points of chance" in text
    assert "study.learning) and their " in text and "left out: lr=0.0 attention=none" in text
    confirmed_section = text.split("## Confirmed arms")[1]
    assert "Screen fidelity: " in confirmed_section and result.fidelity.n == len(result.means)
    ranking = screen_table(exp)
    assert list(ranking["trials"]) == [1] * 4 and ranking.loc[0, "chosen"].startswith("screen rank 1")
    # The report's frames (trials.csv, epochs.csv, sweep.json) give the same report again.
    again = write_report(load(tmp_path / "report"), tmp_path / "again").read_text()
    assert report_blocks(again) == report_blocks(text)


def test_a_cost_planted_in_the_confirm_frame_is_supported_in_table_and_sentence(known, tmp_path):
    """The run's own confirm frame with the lr-0 neighbour's test accuracy set 40 points below the best
    arm's on every seed (and a little more each seed, so the differences have a spread): whatever the
    machine's training gave, removing lr 0.05 is then shown to cost, in the table and in its sentence,
    at the first look."""
    _, experiment = known
    exp = load(experiment)
    spec = exp.phases["confirm"]
    best = spec["arms"][0]["levels"]
    factors = spec["factors"]
    trials = exp.trials.copy()
    labels = pd.Series([arm_label(a, factors) for a in trials[factors].to_dict("records")], index=trials.index)
    confirm = trials["phase"] == "confirm"
    best_acc = trials[confirm & (labels == arm_label(best, factors))].set_index("seed")["test_acc"]
    neighbour = confirm & (labels == arm_label({**best, "lr": 0.0}, factors))
    seeds = trials.loc[neighbour, "seed"]
    trials.loc[neighbour, "test_acc"] = (best_acc.reindex(seeds).to_numpy() - 40 - 0.5 * seeds).to_numpy()
    planted = replace(exp, trials=trials)
    table = confirmed(planted).questions
    row = table[table["roles"].str.contains("without lr=0.05")].iloc[0]
    assert row["verdict"] == "supported" and row["low"] > 30 and row["look"] == 1
    text = write_report(planted, tmp_path / "report").read_text()
    assert ("- Removing lr=0.05 (-> 0.0) from the screen's best arm costs test accuracy: **supported** "
            f"(+{row['estimate']:.2f} points") in text


def test_a_raised_cap_continues_the_confirm_phase_without_training_again(known, capsys):
    """--confirm EXP --max-seeds N: the cap raised, the questions that stopped at the old one opened
    again, new looks for their arms only; nothing of the earlier looks trains again."""
    _, experiment = known
    before = record(experiment)["phases"]["confirm"]
    ran = {look["dir"]: sorted(p.name for p in (experiment / look["dir"]).glob("train_trial_*")) for look in before["looks"]}
    assert run.main(["--confirm", str(experiment), "--max-seeds", "7"]) == 0
    after = record(experiment)["phases"]["confirm"]
    assert after["max_seeds"] == 7 and after["looks"][:len(before["looks"])] == before["looks"]
    for directory, names in ran.items():
        assert sorted(p.name for p in (experiment / directory).glob("train_trial_*")) == names
    reopened = [q["id"] for q in before["questions"] if before["looks"][-1]["answers"][q["id"]]["state"] == "cap"]
    if len(after["looks"]) > len(before["looks"]):  # some question reopened open, not futile
        assert reopened and after["looks"][len(before["looks"])]["seeds"] == [max(before["looks"][-1]["seeds"]) + 1]
    out = capsys.readouterr().out
    assert "confirm: continued with a cap of 7 seeds an arm" in out and "the screen's best arm" in out
    assert run.main(["--confirm", str(experiment), "--max-seeds", "4"]) == 2  # a cap is only raised
    assert "a cap is only raised" in capsys.readouterr().err


def test_a_reports_frames_continue_their_confirm_phase(known, tmp_path, capsys):
    """A report's directory (trials.csv, epochs.csv, sweep.json; no Ray Tune directory) continues its
    confirm phase: a phase recorded before looks and questions gets them, as declared from its arms,
    its seeds one look at their own cap; the new looks train beside the frames, none of the recorded
    trials again, and the report reads both."""
    _, experiment = known
    frames = tmp_path / "frames"
    write_report(load(experiment), frames)
    recorded = json.loads((frames / "sweep.json").read_text())
    confirm = recorded["phases"]["confirm"]
    for key in ("looks", "questions", "max_seeds", "margin", "alpha"):  # as committed reports recorded them
        confirm.pop(key)
    (frames / "sweep.json").write_text(json.dumps(recorded))
    trials = pd.read_csv(frames / "trials.csv")  # ... with the first look's seeds only
    kept = trials[~trials["trial_dir"].str.contains("-look-")]
    kept.to_csv(frames / "trials.csv", index=False)
    epochs = pd.read_csv(frames / "epochs.csv")
    epochs[epochs["trial_id"].isin(kept["trial_id"])].to_csv(frames / "epochs.csv", index=False)
    before = load(frames)
    ran = len(before.phase("confirm").trials)
    assert run.main(["--confirm", str(frames), "--max-seeds", str(int(before.trials["seed"].max()) + 1)]) == 0
    after = json.loads((frames / "sweep.json").read_text())["phases"]["confirm"]
    first = after["looks"][0]
    assert first["dir"] == "confirm" and "answers" in first and len(after["questions"]) >= 1
    assert after["declared_after"] == len(first["seeds"])  # the questions were declared after those seeds ran
    assert "as the report's frames record them" in capsys.readouterr().out
    exp = load(frames)
    assert exp.trials["trial_id"].is_unique and len(exp.phase("confirm").trials) >= ran
    new = set(exp.phase("confirm").trials["trial_dir"].str.split("/").str[0]) - {"confirm"}
    assert new == {look["dir"] for look in after["looks"][1:]} and all((frames / d).is_dir() for d in new)
    design = confirmed(exp).design
    assert design.endswith("not 0.05") and f"declared after its first {len(first['seeds'])} seeds had run" in design


def report_blocks(text: str) -> list[str]:
    """A report's titles and tables (its other lines name the directory it was read from)."""
    return [line for line in text.splitlines() if line.startswith(("## ", "|"))]


def test_notebook_shows_the_reports_sections_on_a_phased_experiment(known, tmp_path):
    """analysis/trials.ipynb on the run (ABLATION_RUN_DIR): the report's sections, the screen's study then
    the confirm phase's, its tables the report's frames."""
    notebook, shown = execute_notebook(tmp_path / "shown.pkl", run_dir=known[1])
    assert_notebook_is_the_report(notebook, shown, sections(load(known[1])))
    assert "the screen's best arm" in " ".join(text for _, text, *_ in shown["sections"])


def test_confirm_again_with_other_top_and_seeds(known, capsys):
    _, experiment = known
    first = record(experiment)["phases"]["confirm"]
    assert run.main(["--confirm", str(experiment), "--confirm-top", "1", "--confirm-seeds", "2", "--max-seeds", "2"]) == 0
    phases = record(experiment)["phases"]
    assert phases["earlier_confirms"][0]["dir"] == "confirm" and phases["earlier_confirms"][0]["arms"] == first["arms"]
    again = phases["confirm"]
    assert again["dir"] == "confirm-2" and again["top"] == 1 and again["seeds"] == [1, 2]
    assert [a["why"] for a in again["arms"]].count("screen rank 2") == 0
    exp = load(experiment)
    assert len(exp.phase("confirm").trials) == 2 * len(again["arms"])  # the newest confirm phase, one fixed look
    assert "the screen's best arm" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--confirm-top", "0"], "--confirm-top must be >= 1"),
    (["--confirm-seeds", "1"], "--confirm-seeds must be >= 2"),
    (["--no-confirm", "--confirm-top", "2"], "--no-confirm runs the screen only"),
    (["--space", "embedded", "--confirm-top", "2"], "has no confirm phase"),  # a multi-objective search
    (["--max-seeds", "2"], "--max-seeds 2 is below the 3 seeds every arm runs at the first look (--confirm-seeds)"),
    (["--confirm-seeds", "5", "--max-seeds", "4"], "--max-seeds 4 is below the 5 seeds"),
    (["--max-seeds", "51"], "is more than a confirm phase plans (at most 50)"),
    (["--margin", "0"], "--margin 0 must be between 0 and 100 accuracy points"),
])
def test_bad_confirm_flags_are_one_line_errors(argv, message, tmp_path, capsys):
    assert run.main(["--space", "ablation", "--smoke-test", "--storage-path", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and not list(tmp_path.iterdir())


def test_confirm_or_resume_of_what_is_not_an_experiment(known, tmp_path, capsys):
    assert run.main(["--confirm", str(tmp_path / "nothing")]) == 2
    assert "is not an experiment directory" in capsys.readouterr().err
    assert run.main(["--resume", str(known[1]), "--confirm-top", "2"]) == 2  # the plan is the recorded one
    assert "--resume continues the experiment as it was planned" in capsys.readouterr().err
    for flag in ("--resume", "--confirm"):  # a phase's directory: a Ray Tune experiment, not ours
        assert run.main([flag, str(known[1] / "screen")]) == 2
        err = capsys.readouterr().err
        assert err == f"run.py: error: {known[1] / 'screen'} is a phase of the experiment {known[1]}: use {known[1]}\n"
    assert run.main(["--confirm", str(tmp_path), "--dry-run"]) == 2
    assert "--dry-run plans a new sweep" in capsys.readouterr().err
    assert run.main(["--confirm", str(known[1]), "--margin", "1"]) == 2  # the questions' margin is declared once
    err = capsys.readouterr().err
    assert "--margin is recorded with the questions a confirm phase declares" in err and len(err.splitlines()) == 1


def test_dry_run_prints_both_phases(capsys):
    assert run.main(["--space", "ablation", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "48 trials (the screen)" in out
    # top 3 + 5 leave-one-out neighbours + the all-reference arm: 3 fresh seeds each at the first look, at most
    # 12 each by the cap, 30 epochs at most; the screen's rungs: 48 arms x 10 epochs + 16 x 30
    assert "at most 9 arms" in out and ": 27 to at most 108 trials" in out
    assert f"at most {48 * 10 + 16 * 30 + 108 * 30} trial-epochs" in out
    # what the sequential design is expected to cost, simulated, between the first look and the cap
    expected = re.search(r"expected about (\d+) trials if no arm differs from the best, (\d+) if", out)
    assert expected and 27 <= int(expected[1]) <= int(expected[2]) <= 108
    assert run.main(["--space", "ablation", "--dry-run", "--no-confirm"]) == 0
    assert "confirm" not in capsys.readouterr().out


def test_each_look_prints_its_counts_and_what_the_next_trains(capsys):
    """The console after a look: the questions by state and the next look; each question's answer so far
    only where a look follows (after the last, the closing lines print the answers). The first line's cap."""
    from study.questions import Answer
    from sweep.driver import phases_line, print_look

    qs = [{"id": "a vs b", "roles": ["screen rank 2"], "margin": 0.5, "kind": "difference"},
          {"id": "a vs c", "roles": ["all-reference baseline"], "margin": 0.5, "kind": "difference"}]
    answers = {"a vs b": Answer(3, 1.2, 0.4, -0.9, 3.3, 9.1, "open", "", 0.6),
               "a vs c": Answer(3, 4.0, 0.2, 1.0, 7.0, 9.1, "settled", "+", float("nan"))}
    confirm = {"questions": qs, "max_seeds": 6,
               "looks": [{"seeds": [1, 2, 3], "arms": [0, 1, 2]}, {"seeds": [4], "arms": [0, 1]}]}
    print_look(confirm, 0, answers)
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "confirm look 1: 2 declared questions: 1 open, 1 settled; look 2: one more seed (4) for 2 arm(s) " \
                     "of the open questions"
    assert out[2].startswith("  a vs b (screen rank 2): +1.20 points [-0.90, 3.30], n = 3 seed pairs: inconclusive")
    assert out[3].startswith("  a vs c (all-reference baseline): +4.00 points [1.00, 7.00], n = 3 seed pairs: supported")
    print_look(confirm, 1, answers)
    assert capsys.readouterr().out.splitlines()[1:] == ["confirm look 2: 2 declared questions: 1 open, 1 settled; "
                                                        "no look follows"]
    # the sweep's first line names the cap, where there is one beyond the first look
    record = {"phases": {"screen": {"expected_trials": 48}, "confirm": {"top": 3, "seeds": [1, 2, 3], "max_seeds": 12}}}
    assert phases_line(record) == "screen of 48 trials, then a confirm phase (top 3, 3 fresh seeds, up to 12)"
    record["phases"]["confirm"]["max_seeds"] = 3
    assert phases_line(record) == "screen of 48 trials, then a confirm phase (top 3, 3 fresh seeds)"


def test_a_confirm_phase_planned_before_looks_chooses_its_arms_for_the_fixed_design_it_planned(tmp_path, monkeypatch,
                                                                                              capsys):
    """An experiment planned before confirm phases ran in looks, resumed before its screen ended: its
    confirm phase records its questions and one look at the seeds it planned (its cap), the default
    margin and level."""
    from types import SimpleNamespace

    from sweep import driver

    arms = [{"levels": {"attention": "channel"}, "why": "screen rank 1"},
            {"levels": {"attention": "none"}, "why": "without attention=channel (-> none)"}]
    monkeypatch.setattr(driver, "load", lambda path: SimpleNamespace(trials=None, epochs=None))
    monkeypatch.setattr(driver, "confirm_arms", lambda *args: (arms, {"attention": "none"}))
    record = {"params": {"attention": {"grid": ["none", "channel"]}},
              "phases": {"screen": {"dir": "screen"},
                         "confirm": {"dir": "confirm", "top": 1, "seeds": [1, 2, 3], "factors": ["attention"]}}}
    driver.choose_arms(SimpleNamespace(tune_dir=str(tmp_path / "screen"), experiment_dir=str(tmp_path),
                                       search="grid"), record)
    confirm = json.loads((tmp_path / "sweep.json").read_text())["phases"]["confirm"]
    assert (confirm["max_seeds"], confirm["margin"], confirm["alpha"]) == (3, 0.5, 0.05)
    assert confirm["looks"] == [{"dir": "confirm", "seeds": [1, 2, 3], "arms": [0, 1], "expected_trials": 6, "cap": 3}]
    assert len(confirm["questions"]) == 1 and "up to 3 an arm" in capsys.readouterr().out


# ------------------------------------------------------------------------------------ resume
def launch(log: Path, *args: str) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "sweep/run.py", *args, "--address", "local"], cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def kill_when(driver: subprocess.Popen, condition, what: str, timeout: float = 240) -> None:
    try:
        deadline = time.monotonic() + timeout
        while not condition() and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.2)
        assert condition(), f"{what} did not happen before the driver ended or the deadline"
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray it started
        driver.wait()


def reported(phase_dir: Path, final: bool = True) -> dict[str, list[dict]]:
    """trial directory name -> its result rows, for the trials whose last row is final (or, without
    `final`, that reported an epoch)."""
    out = {}
    for path in phase_dir.glob("*/result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]
        if rows and (rows[-1].get("status") == "finished" or not final):
            out[path.parent.name] = rows
    return out


def test_resume_after_kills_in_the_screen_and_in_the_confirm_phase(tmp_path):
    """SIGKILL once a screen trial has finished, resume; SIGKILL again once a trial of the confirm phase's
    first look has reported an epoch, resume: both phases end with every expected trial, none trained
    twice to its end, the looks after it chosen from it as recorded."""
    experiment = tmp_path / "killed"
    argv = ["--space", "smoke", "--epochs", "3", "--scheduler", "fifo", "--max-concurrent", "1",
            "--confirm-top", "1", "--confirm-seeds", "3", "--max-seeds", "4", "--storage-path", str(tmp_path),
            "--name", "killed"]
    kill_when(launch(tmp_path / "first.log", *argv), lambda: reported(experiment / "screen"), "a finished screen trial")
    assert len(reported(experiment / "screen")) < 2, "the screen ended before the kill"
    kill_when(launch(tmp_path / "second.log", "--resume", str(experiment)),
              lambda: reported(experiment / "confirm", final=False), "a confirm trial's first epoch")
    second = (tmp_path / "second.log").read_text()
    assert "resuming" in second and "confirm:" in second
    screen_rows = reported(experiment / "screen")
    confirm_rows = reported(experiment / "confirm")  # the confirm trials that finished before the kill
    arms = record(experiment)["phases"]["confirm"]["arms"]
    assert len(screen_rows) == 2 and len(confirm_rows) < 3 * len(arms)

    resumed = launch(tmp_path / "third.log", "--resume", str(experiment))
    assert resumed.wait(timeout=300) == 0, (tmp_path / "third.log").read_text()[-3000:]
    assert "the screen's best arm" in (tmp_path / "third.log").read_text()
    assert record(experiment)["phases"]["confirm"]["arms"] == arms  # chosen once
    assert reported(experiment / "screen") == screen_rows  # the ended screen did not run again
    after = reported(experiment / "confirm")
    for name, rows in confirm_rows.items():  # kept, not trained again from the start (Tune's snapshot
        # may predate a trial's last epoch, which may then run once more; never its first)
        epochs = [row["epoch"] for row in after[name]]
        assert after[name][:len(rows)] == rows and epochs.count(1) == 1, epochs
    exp = load(experiment)
    confirm = exp.trials[exp.trials["phase"] == "confirm"]
    looks = record(experiment)["phases"]["confirm"]["looks"]
    assert all("answers" in look for look in looks) and len(looks) <= 2
    assert len(confirm) == sum(len(look["arms"]) * len(look["seeds"]) for look in looks)
    assert set(confirm["stop_reason"]) == {"finished"}
    pairs = set(zip(confirm["attention"], confirm["seed"]))
    assert pairs == {(arms[i]["levels"]["attention"], s) for look in looks for i in look["arms"]
                     for s in look["seeds"]}  # fresh seeds: the screen's is 0
    # A FIFO screen that a confirm phase follows: its effects are on validation accuracy, never its test
    text = write_report(exp, tmp_path / "report").read_text()
    assert "Compared: the screen's validation accuracy at epoch 3, the last epoch every trial reached" in text


def test_a_random_screen_confirms_its_top_configs_as_they_ran():
    """A random search has no reference levels: the confirm set is its top K configs, each exactly as
    sampled, run as Tune points with a grid of the fresh seeds (sweep.planning.phases.confirm_phase)."""
    from study.selection import confirm_arms
    from sweep.planning.phases import confirm_phase, fresh_seeds, new_confirm
    from sweep.planning.plan import Plan

    params = {"dataset": "synthetic", "lr": {"loguniform": [1e-3, 0.3]}, "dropout": {"uniform": [0.0, 0.5]}}
    lrs, dropouts, best_val = [0.011, 0.2, 0.05], [0.1, 0.3, 0.2], [40.0, 70.0, 55.0]
    trials = pd.DataFrame({"trial_id": ["a", "b", "c"], "lr": lrs, "dropout": dropouts})
    epochs = pd.DataFrame({"trial_id": ["a", "b", "c"], "epoch": [3, 3, 3], "val_acc": best_val})
    confirm = new_confirm(params, top=2, seeds=2)
    assert confirm["seeds"] == fresh_seeds(params, 2) == [1, 2] and confirm["factors"] == ["lr", "dropout"]
    arms, references = confirm_arms(trials, epochs, params, confirm, "random")
    assert references is None
    assert arms == [{"levels": {"lr": 0.2, "dropout": 0.3}, "why": "screen rank 1"},
                    {"levels": {"lr": 0.05, "dropout": 0.2}, "why": "screen rank 2"}]
    screen = Plan("/x/e", "random", "asha", 3, 3, 1, 3, 1, 0, None, 0, 0, phase_dir="screen")
    confirm_params, plan = confirm_phase(screen, params, {**confirm, "arms": arms})
    assert confirm_params["lr"] == {"choice": [0.2, 0.05]} and confirm_params["seed"] == {"grid": [1, 2]}
    assert (plan.tune_dir, plan.scheduler, plan.num_samples, plan.points) == ("/x/e/confirm", "fifo", 2,
                                                                              [a["levels"] for a in arms])


def test_the_screen_ranks_what_the_scheduler_did_and_levels_as_the_trials_ran():
    """An arm that ended on its own with fewer planned epochs is not ranked below deeper arms (only a
    scheduler's stop ranks an arm lower), and a float field written as integers in the space (grid
    [1, 5], run as 1.0 and 5.0) gives one arm per level: the reference and the neighbours are written
    as the trials ran them, so nothing is confirmed twice."""
    from study.selection import confirm_arms
    from sweep.planning.phases import new_confirm

    params = {"epochs": {"grid": [2, 4]}, "clip_grad_norm": {"grid": [1, 5]}}
    trials = pd.DataFrame({"trial_id": list("abcd"), "epochs": [2, 4, 4, 2], "clip_grad_norm": [5.0, 5.0, 1.0, 1.0],
                           "stop_reason": ["finished", "finished", "scheduler_stopped", "finished"]})
    epochs = pd.DataFrame({"trial_id": list("aabbbbcd"), "epoch": [1, 2, 1, 2, 3, 4, 1, 1],
                           "val_acc": [50, 60, 30, 40, 45, 50, 70, 20]})
    confirm = new_confirm(params, top=1, seeds=2)
    arms, references = confirm_arms(trials, epochs, params, confirm, "grid")
    assert references == {"epochs": 2, "clip_grad_norm": 1.0}
    # a (2 epochs, ended, 60) beats b (4 epochs, 50); c (70 at epoch 1, stopped by the scheduler) ranks below
    assert [a["levels"] for a in arms] == [{"epochs": 2, "clip_grad_norm": 5.0}, {"epochs": 2, "clip_grad_norm": 1.0}]
    assert arms[1]["why"] == "without clip_grad_norm=5.0 (-> 1.0); all-reference baseline"
