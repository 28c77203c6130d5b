"""analysis on hand-made frames with known answers: effects and their intervals, the recipe
interaction verdict, fANOVA, the two studies' tables, the Pareto front, table rendering."""
import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import effects
from analysis.depth import PAPER_DEPTH, depth_table
from analysis.pareto import arm_summary, pareto_front
from analysis.render import readable, to_markdown, write_table
from analysis.stages import PAPER_STAGE_ACCURACY, stage_table

CONFIG = ("attention", "dsconv", "lr", "seed", "recipe")  # TrainConfig fields, then a bundle key


def factorial(effect_of, seeds=6, noise=0.5, rng_seed=0):
    """attention x dsconv x recipe x seeds, test_acc = 70 + effect_of(row) + N(0, noise)."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for attention, dsconv, recipe, seed in itertools.product(("none", "channel"), (False, True),
                                                             ("baseline", "holistic"), range(seeds)):
        row = {"attention": attention, "dsconv": dsconv, "recipe": recipe, "seed": seed,
               "lr": 0.01 if recipe == "baseline" else 0.1, "stop_reason": "finished"}
        row["test_acc"] = 70 + effect_of(row) + rng.normal(0, noise)
        rows.append(row)
    return pd.DataFrame(rows)


def test_welch_interval_matches_scipy_ttest():
    a, b = np.array([5.1, 6.3, 5.8, 7.0]), np.array([4.0, 4.4, 3.1])
    estimate, low, high, df = effects.welch_contrast([a, b], [1.0, -1.0])
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert estimate == pytest.approx(a.mean() - b.mean())
    assert (low, high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert np.isnan(effects.welch_contrast([a, b[:1]], [1.0, -1.0])[1])  # one value: no interval


def test_planted_effect_found_and_null_factor_includes_zero():
    trials = factorial(lambda r: 2.0 * (r["attention"] == "channel"))
    assert effects.ablation_factors(trials, CONFIG) == ["recipe", "attention", "dsconv"]  # lr is the recipe
    table = effects.main_effects(trials, ["attention", "dsconv"]).set_index("factor")
    planted, null = table.loc["attention"], table.loc["dsconv"]
    assert (planted["level"], planted["reference"]) == ("channel", "none")
    assert (planted["n"], planted["n_ref"]) == (24, 24)
    assert planted["effect"] == pytest.approx(2.0, abs=0.4)
    assert 0 < planted["ci_low"] < 2.0 < planted["ci_high"] and planted["excludes_zero"]
    assert (null["level"], null["reference"]) == (True, False)
    assert null["ci_low"] < 0 < null["ci_high"] and not null["excludes_zero"]


def test_negative_effect_has_negative_sign():
    trials = factorial(lambda r: -3.0 * r["dsconv"])
    row = effects.main_effects(trials, ["dsconv"]).iloc[0]
    assert row["ci_high"] < 0 and row["effect"] == pytest.approx(-3.0, abs=0.4)


def test_interaction_supports_the_claim_only_when_the_data_do():
    only_with_recipe = factorial(lambda r: 3.0 * (r["attention"] == "channel" and r["recipe"] == "holistic"))
    table = effects.recipe_interactions(only_with_recipe, ["recipe", "attention", "dsconv"]).set_index("factor")
    attention = table.loc["attention"]
    assert (attention["recipe"], attention["base_recipe"], attention["n_min"]) == ("holistic", "baseline", 12)
    assert attention["base_low"] < 0 < attention["base_high"]
    assert attention["new_low"] > 0 and attention["ci_low"] > 0
    assert attention["interaction"] == pytest.approx(3.0, abs=0.6)
    assert attention["verdict"] == "supported"
    assert table.loc["dsconv", "verdict"] == "inconclusive"

    always = factorial(lambda r: 3.0 * (r["attention"] == "channel"))
    table = effects.recipe_interactions(always, ["recipe", "attention"]).set_index("factor")
    assert table.loc["attention", "verdict"] == "contradicted"  # it helped under the old recipe too


def test_completed_excludes_stopped_trials_and_says_so():
    trials = factorial(lambda r: 0.0, seeds=2)
    trials.loc[0, ["stop_reason", "test_acc"]] = ["scheduler_stopped", np.nan]
    trials.loc[1, ["stop_reason", "test_acc"]] = ["unfinished", np.nan]
    kept, note = effects.completed(trials)
    assert len(kept) == len(trials) - 2 and set(kept["stop_reason"]) == {"finished"}
    assert "1 scheduler_stopped" in note and "1 unfinished" in note


def test_common_epoch_includes_scheduler_stopped_trials():
    trials = pd.DataFrame({"trial_id": ["a", "b", "c"],
                           "stop_reason": ["finished", "scheduler_stopped", "errored"], "last_epoch": [3, 1, 0],
                           "attention": ["none", "channel", "none"]})
    epochs = pd.DataFrame({"trial_id": ["a", "a", "a", "b"], "epoch": [1, 2, 3, 1],
                           "val_acc": [50.0, 60, 70, 55]})
    frame, note = effects.at_common_epoch(trials, epochs)
    assert list(frame["trial_id"]) == ["a", "b"] and list(frame["val_acc_at_epoch"]) == [50.0, 55.0]
    assert "epoch 1" in note and "1 errored" in note


def test_fanova_ranks_the_planted_factor_first():
    trials = factorial(lambda r: 4.0 * (r["attention"] == "channel"), seeds=3)
    ranking = effects.importance(trials, ["attention", "dsconv", "recipe"])
    assert list(ranking["factor"])[0] == "attention" and ranking["importance"].iloc[0] > 0.8
    assert ranking.equals(effects.importance(trials, ["attention", "dsconv", "recipe"]))  # seeded
    assert effects.importance(trials.assign(test_acc=1.0), ["attention"]).empty  # nothing to explain


def test_stage_table_paper_column_and_differences_are_exact():
    rows = [{"stage": stage, "seed": seed, "stop_reason": "finished", "test_acc": 70.0 + i + seed,
             "params": 1e6 * (i + 1), "flops": 2e8, "wall_time_s": 600.0 * (seed + 1)}
            for i, stage in enumerate(PAPER_STAGE_ACCURACY) for seed in (0, 2)]
    rows.append({"stage": "holistic", "seed": 9, "stop_reason": "unfinished", "test_acc": np.nan})
    table = stage_table(pd.DataFrame(rows))
    assert list(table["stage"]) == list(PAPER_STAGE_ACCURACY)
    assert list(table["paper_test_acc"]) == [74.09, 81.90, 67.23, 67.96, 86.86]
    assert list(table["test_acc_mean"]) == [71.0, 72.0, 73.0, 74.0, 75.0]
    assert list(table["diff_vs_paper"]) == [71 - 74.09, 72 - 81.90, 73 - 67.23, 74 - 67.96, 75 - 86.86]
    assert list(table["n"]) == [2] * 5 and list(table["n_other"]) == [0, 0, 0, 0, 1]
    assert table["test_acc_std"].iloc[0] == pytest.approx(np.sqrt(2))
    assert list(table["params_m_mean"]) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert table["gflops_mean"].iloc[0] == pytest.approx(0.2) and table["time_min_mean"].iloc[0] == 20.0


def test_stage_names_match_the_sweep_presets():
    from sweep.spaces import STAGES

    assert list(PAPER_STAGE_ACCURACY) == list(STAGES)


def test_depth_table_relative_increases_and_paper_figures():
    rows = [{"recipe": "resnet_study", "model": model, "seed": seed, "stop_reason": "finished",
             "test_acc": acc + seed, "wall_time_s": 60.0 * minutes, "epochs_run": 50, "params": 1e7}
            for model, acc, minutes in (("resnet18", 80, 40), ("resnet50", 84, 100), ("resnet152", 88, 250))
            for seed in (0, 1)]
    table = depth_table(pd.DataFrame(rows))
    assert list(table["model"]) == ["resnet18", "resnet50", "resnet152"]
    assert list(table["layers"]) == [18, 50, 152]
    assert list(table["paper_test_acc"]) == [80.84, 83.55, 85.94]
    assert list(table["paper_time_min"]) == [41, 112, 262]
    assert table["paper_acc_increase_pct"].tolist() == pytest.approx([0.0, 3.3523, 6.3088], abs=1e-4)
    assert table["layers_increase_pct"].tolist() == pytest.approx([0.0, 1600 / 9, 6700 / 9])
    assert table["acc_increase_pct"].tolist() == pytest.approx([0.0, 400 / 80.5, 800 / 80.5])
    assert list(table["time_min_mean"]) == [40.0, 100.0, 250.0] and list(table["n"]) == [2, 2, 2]
    assert list(PAPER_DEPTH["layers"]) == [18, 50, 152]


def test_pareto_front_on_a_known_set():
    points = pd.DataFrame({"name": list("ABCDEF"), "test_acc": [90, 85, 80, 95, 85, np.nan],
                           "params": [10, 5, 20, 30, 5, 1]})
    front = pareto_front(points)
    assert list(points.loc[front, "name"]) == ["A", "B", "D", "E"]  # C dominated; B, E tie; F has no accuracy


def test_arm_summary_marks_the_front_per_cost():
    trials = pd.DataFrame({"attention": ["none", "none", "channel", "channel"], "test_acc": [80.0, 82, 85, 87],
                           "params": [1e6, 1e6, 2e6, 2e6], "flops": [1e8, 1e8, 1e8, 1e8],
                           "latency_ms_b1": [np.nan] * 4})
    arms = arm_summary(trials, ["attention"])
    assert list(arms["n"]) == [2, 2] and list(arms["test_acc_mean"]) == [81.0, 86.0]
    assert list(arms["pareto_params"]) == [True, True] and list(arms["pareto_flops"]) == [False, True]
    assert "pareto_latency_ms_b1" not in arms  # no latency measured: no panel


def test_rendering_merges_mean_and_std_and_writes_each_format(tmp_path):
    table = pd.DataFrame({"stage": ["a_b"], "n": [3], "test_acc_mean": [81.234], "test_acc_std": [0.5],
                          "params": [1.5e6], "x": [np.nan]})
    assert list(readable(table).columns) == ["stage", "n", "test_acc (mean ± std)", "params_M", "x"]
    text = to_markdown(table)
    assert "81.23 ± 0.50" in text and "nan" not in text
    for fmt in ("md", "csv", "tex"):
        path = write_table(table, tmp_path / "t", fmt)
        assert path.suffix == f".{fmt}" and path.read_text()
    assert r"a\_b" in (tmp_path / "t.tex").read_text()
    assert pd.read_csv(tmp_path / "t.csv")["test_acc_mean"].iloc[0] == 81.234


def test_continuous_factor_is_left_to_importance():
    trials = factorial(lambda r: 0.0, seeds=1).assign(dropout=np.linspace(0.0, 0.5, 8))
    assert list(effects.main_effects(trials, ["dropout", "dsconv"])["factor"]) == ["dsconv"]
    assert set(effects.importance(trials, ["dropout", "dsconv"])["factor"]) == {"dropout", "dsconv"}
