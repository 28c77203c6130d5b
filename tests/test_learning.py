"""study.learning by simulation against known truth, and the console's and estimate's small parts."""
import numpy as np
import pandas as pd
import pytest

from analysis.verdicts import did_not_learn
from study import learning
from study.cli import duration
from sweep.console import MAX_ROWS, live_rows
from sweep.estimate import makespan


def simulated(rate: float, n_val: int, trials: int, rng) -> pd.DataFrame:
    """Trials whose validation accuracy is a binomial draw at `rate` on `n_val` images (10 classes)."""
    correct = rng.binomial(n_val, rate, size=trials)
    return pd.DataFrame({"trial_id": [f"t{i}" for i in range(trials)], "dataset": "fashion-mnist",
                         "best_val_acc": 100 * correct / n_val, "val_images": n_val})


@pytest.mark.parametrize("n_val", [222, 2000])
def test_the_learning_test_holds_its_error_rate_and_finds_learners(n_val):
    rng = np.random.default_rng(0)
    # at the floor itself (chance 10% + 5 points) "learned" is a false claim: at most alpha of the time
    at_floor = learning.learned(simulated(0.15, n_val, 2000, rng)).mean()
    assert at_floor <= learning.ALPHA + 0.015
    # at chance hardly anything is called a learner, and the opposite test shows it stayed there
    at_chance = simulated(0.10, n_val, 500, rng)
    assert learning.learned(at_chance).mean() <= 0.01
    assert (learning.tests(at_chance)["p_at_chance"] < 0.05).mean() > (0.6 if n_val == 222 else 0.99)
    # 15 points above the floor is found almost always, even on 222 images
    assert learning.learned(simulated(0.30, n_val, 500, rng)).mean() > 0.99


def test_an_arm_with_one_seed_that_learned_is_not_at_chance_and_arms_at_chance_are_counted_and_named():
    frame = pd.DataFrame({"attention": ["none"] * 3 + ["simple"] * 3 + ["channel"] * 3,
                          "dataset": "fashion-mnist", "val_images": 2000,
                          "best_val_acc": [80.0, 81.0, 79.0, 10.0, 10.2, 9.9, 10.0, 60.0, 11.0]})
    learned, at_chance, why, arms = learning.check(frame, ["attention"])
    assert arms == 3 and sorted(set(learned["attention"])) == ["channel", "none"] and len(learned) == 6
    assert list(at_chance["attention"]) == ["simple"] and at_chance.loc[0, "n"] == 3
    assert at_chance.loc[0, "p_at_chance_holm"] < 0.05 and at_chance.loc[0, "best_val_acc"] == 10.2
    assert why.startswith("1 of 3 arms did not learn") and "study.learning) and their 3 trials are left out: attention=simple" in why
    assert not learning.most_did_not_learn(at_chance, 3) and learning.most_did_not_learn(at_chance, 1)
    sentence = did_not_learn(at_chance)[0]
    assert sentence.startswith("attention=simple stays within 5 points of chance (10%): **supported**")


def test_trials_that_cannot_be_tested_count_as_learned():
    frame = pd.DataFrame({"dataset": ["fashion-mnist", "imagefolder:/x"], "best_val_acc": [10.0, 10.0],
                          "val_images": [np.nan, 100]})
    assert learning.learned(frame).all()  # no val_images; an image folder without per-class columns


def test_makespan_and_duration():
    assert makespan([10, 10, 10, 10], 2) == 20 and makespan([30, 10, 10, 10], 2) == 30
    assert makespan([5, 5], 8) == 5
    assert (duration(40), duration(600), duration(3 * 3600 + 5 * 60)) == ("40 s", "10 min", "3 h 05 min")


def test_the_live_table_keeps_the_running_the_best_and_the_newest():
    n = 48
    frame = pd.DataFrame({"trial_id": range(n), "status": ["TERMINATED"] * 30 + ["RUNNING"] * 2 + ["PENDING"] * 16,
                          "best_val_acc": list(range(30)) + [np.nan] * 18,
                          "timestamp": list(range(30)) + [np.nan] * 18})
    shown, note = live_rows(frame)
    assert len(shown) == MAX_ROWS and set(frame.index[30:32]) <= set(shown.index)
    assert set(range(25, 30)) <= set(shown.index)  # the 5 best (also the newest here)
    assert list(shown.index) == sorted(shown.index) and "16 pending" in note and "20 of 48 trials shown" in note
    small = frame.head(10)
    assert live_rows(small) == (small, "")


def test_the_committed_stages_report_leaves_the_stage_that_did_not_learn_out_of_its_findings():
    """results/stages (real Fashion-MNIST): simple attention without batch norm stays at chance; the
    effects, importance and front compare the four stages that learned, the stage steps into and out
    of it say they measure a failure to learn."""
    from pathlib import Path

    from analysis.report import sections
    from study.load import load

    every = sections(load(Path(__file__).resolve().parent.parent / "results" / "stages"))
    found = {s.name or s.title: s for s in every}
    assert list(found["did_not_learn"].table["stage"]) == ["simple_attention"]
    assert "simple_attention" not in set(found["main_effects"].table["level"])
    assert "left out: stage=simple_attention" in found["main_effects"].text
    assert "simple_attention" not in set(found["pareto"].table["stage"]) and found["importance"].table["n"].max() == 12
    steps = [line for line in found["Verdicts"].text.splitlines() if "simple_attention stage" in line]
    assert len(steps) == 2 and all("measures a failure to learn" in line for line in steps)


def test_an_exploded_loss_is_found_on_the_frames_and_said_in_console_and_report(tmp_path):
    """A finite training loss above 10 x ln(classes) (2.30 for ten) is said once; 22 is not (9.6 times)."""
    import json
    from types import SimpleNamespace

    from analysis.report import sections
    from study.load import load
    from sweep.console import exploded_line
    from tests.helpers import epoch, write_experiment

    trials = pd.DataFrame({"trial_id": ["a", "b", "c"], "dataset": ["fashion-mnist", "fashion-mnist", "folder"],
                           "classes": [np.nan, np.nan, 100]})
    epochs = pd.DataFrame({"trial_id": ["a", "a", "a", "b", "c"], "epoch": [1, 2, 3, 1, 1],
                           "train_loss": [216.0, 300.0, 1.2, 22.0, 47.0]})
    table = learning.exploded(trials, epochs)  # c: 47 > 10 x ln(100) = 46.05, classes from its own record
    assert list(table["trial_id"]) == ["a", "c"] and list(table["epoch"]) == [1, 1]
    assert table.loc[0, "times"] == pytest.approx(216 / np.log(10))
    line = learning.exploded_line(table)
    assert line.startswith("The training loss exploded in 2 trials") and "`a` at epoch 1 (216, 94 times)" in line
    assert learning.exploded_line(learning.exploded(trials, epochs[epochs["trial_id"] == "b"])) == ""

    said: set[str] = set()
    trial = SimpleNamespace(trial_id="a", config={"dataset": "fashion-mnist"}, __str__=lambda self: "t")
    first = exploded_line(trial, {"train_loss": 216.0, "epoch": 1}, said)
    assert "training loss 216 at epoch 1, 94 times a uniform guess's 2.30: its loss exploded" in first
    assert exploded_line(trial, {"train_loss": 300.0, "epoch": 2}, said) is None  # once per trial
    assert exploded_line(SimpleNamespace(trial_id="b", config={"dataset": "fashion-mnist"}),
                         {"train_loss": 22.0, "epoch": 1}, said) is None
    # a space that leaves the dataset at its default: every epoch's result carries the classes
    assert "its loss exploded" in exploded_line(SimpleNamespace(trial_id="c", config={}),
                                                {"train_loss": 216.0, "epoch": 1, "classes": 10}, said)

    experiment = write_experiment(tmp_path / "exp")  # aaaaa_00000's first epoch: a loss of 216 on 10 classes
    result = experiment / trial_dir_name_of(experiment, "aaaaa_00000") / "result.json"
    rows = [json.loads(line) for line in result.read_text().splitlines()]
    rows[0]["train_loss"] = 216.0
    result.write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = next(s.text for s in sections(load(experiment)) if s.title == "Trials")
    assert "The training loss exploded in 1 trial (" in text and "`aaaaa_00000` at epoch 1 (216, 94 times)" in text
    assert epoch(1, 50)["train_loss"] == 2.0  # the helper's other trials: far below the line


def trial_dir_name_of(experiment, trial_id):
    return next(p.name for p in experiment.iterdir() if trial_id in p.name)


def test_the_estimate_prices_the_passes_a_trial_runs_and_says_the_machines_other_load(tmp_path):
    """A screen a confirm phase follows skips the test pass and the latency timing: priced without them;
    a process spinning beside the probe is measured (study.busy) and the line says what it costs."""
    from study.config import TrainConfig
    from sweep.estimate import Estimate, Prices, trial_seconds
    from training.datasets import dataset_sizes

    cfg = TrainConfig(dataset="synthetic", subset=512, image_size=16, epochs=1, width=0.25, batch_size=32)
    sizes = dataset_sizes("synthetic")
    from tests.helpers import other_process_spinning

    with other_process_spinning(tmp_path):
        prices = Prices([cfg], {"synthetic": sizes.classes}, 1)
    assert prices.other_load is not None and prices.other_load > 0.2  # one of the machine's CPUs, spinning
    tested, screened = trial_seconds(cfg, sizes, prices), trial_seconds(cfg, sizes, prices, tested=False)
    train_s, eval_s, single_s = prices.per_image(cfg, sizes.classes)
    latency = 21 * single_s + 4 * 256 * eval_s
    assert tested - screened == pytest.approx(sizes.test * eval_s + latency)
    assert trial_seconds(cfg.replace(measure_latency=False), sizes, prices) == pytest.approx(tested - latency)
    line = Estimate(600.0, [("screen", 600.0)], 2, "cpu (1 thread; no GPU)", 1, 0.5).line()
    assert line.endswith("; the machine is busy: other processes used 50% of its CPU time during the probe, and "
                         "while they run the sweep shares the CPUs with them (~20 min at that load)")
    assert "busy" not in Estimate(600.0, [("screen", 600.0)], 2, "cpu", 1, 0.05).line()
