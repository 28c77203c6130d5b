"""analysis on hand-made frames with known answers: effects and their intervals from the factorial
model, the recipe interaction verdict, which sweeps get effects, fANOVA, the two studies' tables,
the Pareto front, table rendering. (Coverage and error rates by simulation: test_analysis_simulation.)"""
import gc
import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from analysis import effects
from analysis.compared import at_common_epoch, compared_trials
from analysis.depth import PAPER_DEPTH, depth_table
from analysis.importance import MIN_TRIALS, REST, importance
from analysis.pareto import arm_summary
from analysis.render import mean_std, readable, to_markdown, write_table
from analysis.stages import PAPER_STAGE_ACCURACY, STUDY_DATA, stage_steps, stage_table, study_data_caveat
from study.factors import ablation_factors
from study.front import pareto_front
from study.states import completed


@pytest.fixture(autouse=True, scope="module")
def cheap_gc():
    """statsmodels' Holm (multipletests) calls gc.collect() on every call; frozen objects are not scanned."""
    gc.freeze()
    yield
    gc.unfreeze()


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


def test_one_factor_without_seeds_is_welch_with_the_pooled_t_beside_it():
    """One factor, no seeds (unpaired): the interval is Welch's (scipy's ttest_ind with unequal
    variances), the pooled columns the two-sample pooled-variance t interval's."""
    a, b = np.array([5.1, 6.3, 5.8, 7.0]), np.array([4.0, 4.4, 3.1])
    frame = pd.DataFrame({"attention": ["channel"] * 4 + ["none"] * 3, "test_acc": [*a, *b]})
    row = effects.main_effects(effects.fit(frame, ["attention"])).iloc[0]
    welch, pooled = stats.ttest_ind(a, b, equal_var=False), stats.ttest_ind(a, b, equal_var=True)
    assert row["effect"] == pytest.approx(a.mean() - b.mean()) and row["method"] == "welch"
    ci = welch.confidence_interval(0.95)
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert row["p"] == pytest.approx(welch.pvalue) and (row["n"], row["n_ref"]) == (4, 3)
    ci = pooled.confidence_interval(0.95)
    assert (row["pooled_ci_low"], row["pooled_ci_high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert row["pooled_p_holm"] == pytest.approx(pooled.pvalue)


def test_paired_main_effect_is_scipy_ttest_rel_over_the_seeds():
    """Two arms, the same seeds: the main interval is the paired t test of the per-seed differences."""
    rng = np.random.default_rng(3)
    offsets = rng.normal(0, 3, 4)
    a, b = 71 + offsets + rng.normal(0, 0.4, 4), 70 + offsets + rng.normal(0, 0.4, 4)
    frame = pd.DataFrame({"attention": ["channel"] * 4 + ["none"] * 4, "seed": [*range(4)] * 2,
                          "test_acc": [*a, *b]})
    row = effects.main_effects(effects.fit(frame, ["attention"])).iloc[0]
    test = stats.ttest_rel(a, b)
    ci = test.confidence_interval(0.95)
    assert row["method"] == "paired" and row["seeds"] == 4
    assert (row["ci_low"], row["ci_high"], row["p"]) == (pytest.approx(ci.low), pytest.approx(ci.high),
                                                         pytest.approx(test.pvalue))


def test_planted_effect_found_and_null_factor_includes_zero():
    trials = factorial(lambda r: 2.0 * (r["attention"] == "channel"))
    assert ablation_factors(trials, CONFIG) == ["recipe", "attention", "dsconv"]  # lr is the recipe
    table = effects.main_effects(effects.fit(trials, ["attention", "dsconv"])).set_index("factor")
    planted, null = table.loc["attention"], table.loc["dsconv"]
    assert (planted["level"], planted["reference"]) == ("channel", "none")
    assert (planted["n"], planted["n_ref"]) == (24, 24)
    assert planted["effect"] == pytest.approx(2.0, abs=0.4)
    assert planted["emm"] - planted["emm_ref"] == pytest.approx(planted["effect"])
    assert 0 < planted["ci_low"] < 2.0 < planted["ci_high"] and planted["significant"]
    assert planted["p_holm"] >= planted["p"]
    assert (null["level"], null["reference"]) == (True, False)
    assert null["ci_low"] < 0 < null["ci_high"] and not null["significant"]


def test_negative_effect_has_negative_sign():
    trials = factorial(lambda r: -3.0 * r["dsconv"])
    row = effects.main_effects(effects.fit(trials, ["dsconv"])).iloc[0]
    assert row["ci_high"] < 0 and row["effect"] == pytest.approx(-3.0, abs=0.4)


def test_interaction_supports_the_claim_only_when_the_data_do():
    # dsconv has no effect; at rng_seed 0 its noise happens to pass every test (a 5%-rate false
    # positive; error rates are checked by simulation in test_analysis_simulation), so seed 1.
    only_with_recipe = factorial(lambda r: 3.0 * (r["attention"] == "channel" and r["recipe"] == "holistic"),
                                 noise=0.3, rng_seed=1)
    ff = effects.fit(only_with_recipe, ["recipe", "attention", "dsconv"])
    table = effects.recipe_interactions(ff).set_index("factor")
    attention = table.loc["attention"]
    assert (attention["recipe"], attention["base_recipe"]) == ("holistic", "baseline")
    assert abs(attention["effect_base"]) < 0.3 and attention["base_high"] < effects.EQUIVALENCE_MARGIN
    assert attention["new_low"] > 0 and attention["ci_low"] > 0
    assert attention["interaction"] == pytest.approx(3.0, abs=0.6)
    assert attention["verdict"] == "supported", attention["reason"]
    assert table.loc["dsconv", "verdict"] == "inconclusive"
    assert table.loc["dsconv", "reason"].startswith("one-sided p: new > 0 ")

    always = factorial(lambda r: 3.0 * (r["attention"] == "channel"))
    table = effects.recipe_interactions(effects.fit(always, ["recipe", "attention"])).set_index("factor")
    assert table.loc["attention", "verdict"] == "not supported"  # it helped under the old recipe too
    assert table.loc["attention", "reason"].startswith("it helped by 0.5 or more under the base recipe too (Holm p ")


def verdict_row(**changes):
    """A row of the interaction table: every test of the claim passed, none against it."""
    row = {"effect_base": 0.1, "interaction": 2.9, "p_claim": 0.01, "p_claim_holm": 0.02, "p_against": 0.9,
           "p_against_holm": 0.9, "tests": {"new > 0": 0.001, "base < 0.5": 0.01, "interaction > 0": 0.005},
           "against": {"it helped by 0.5 or more under the base recipe too": 0.45,
                       "it helped less with the new recipe than without it": 0.99}}
    return {**row, **changes}


def test_verdict_comes_from_one_holm_family_per_verdict():
    assert effects.claim_verdict(verdict_row())[0] == "supported"
    # The review's case: base-recipe CI [-0.2, 4.0] is "not significant", not "did not help".
    verdict, reason = effects.claim_verdict(verdict_row(p_claim=0.9, p_claim_holm=0.9, tests={
        "new > 0": 0.001, "base < 0.5": 0.9, "interaction > 0": 0.005}))
    assert verdict == "inconclusive" and "base < 0.5 0.9" in reason
    verdict, reason = effects.claim_verdict(verdict_row(p_claim_holm=0.3, p_against_holm=0.01, against={
        "it helped by 0.5 or more under the base recipe too": 0.004,
        "it helped less with the new recipe than without it": 0.9}))
    assert verdict == "not supported" and reason.startswith("it helped by 0.5 or more under the base recipe too")
    assert effects.claim_verdict(verdict_row(p_claim=np.nan, p_against=np.nan))[0] == "inconclusive"


def test_margin_test_against_a_computed_interval():
    """Base-recipe effect ~2 with a wide interval: not supported whatever the new recipe does."""
    trials = factorial(lambda r: 2.0 * (r["attention"] == "channel") + 4.0 * (r["attention"] == "channel"
                                                                              and r["recipe"] == "holistic"),
                       seeds=2, noise=1.5)
    row = effects.recipe_interactions(effects.fit(trials, ["recipe", "attention"])).iloc[0]
    assert row["base_high"] > effects.EQUIVALENCE_MARGIN and row["verdict"] != "supported"


def test_zero_variance_gives_no_interval_and_no_verdict():
    trials = factorial(lambda r: 2.0 * (r["attention"] == "channel"), seeds=2, noise=0.0)
    ff = effects.fit(trials, ["recipe", "attention", "dsconv"])
    assert not ff.has_error_variance and "No residual variance" in ff.describe()
    table = effects.main_effects(ff).set_index("factor")
    assert table.loc["attention", "effect"] == pytest.approx(2.0)
    assert table[["ci_low", "ci_high", "p", "p_holm"]].isna().all().all() and not table["significant"].any()
    inter = effects.recipe_interactions(ff)
    assert set(inter["verdict"]) == {"inconclusive"} and "no test is possible" in inter["reason"].iloc[0]


def test_one_trial_per_arm_gives_effects_without_intervals():
    ff = effects.fit(factorial(lambda r: 0.0, seeds=1), ["recipe", "attention", "dsconv"])
    assert ff.df_resid == 0 and effects.main_effects(ff)["ci_low"].isna().all()


def test_missing_arm_drops_to_a_simpler_model_and_is_named():
    trials = factorial(lambda r: 2.0 * (r["attention"] == "channel"), seeds=3)
    gone = (trials["attention"] == "channel") & trials["dsconv"] & (trials["recipe"] == "holistic")
    ff = effects.fit(trials[~gone], ["recipe", "attention", "dsconv"])
    assert ff.model == "two-way interactions"
    assert ff.missing_cells == [{"recipe": "holistic", "attention": "channel", "dsconv": True}]
    assert "1 arm(s) have no trial (recipe=holistic, attention=channel, dsconv=True)" in ff.describe()
    row = effects.main_effects(ff).set_index("factor").loc["attention"]
    assert row["effect"] == pytest.approx(2.0, abs=0.5) and row["ci_low"] < 2.0 < row["ci_high"]


def test_completed_excludes_stopped_trials_and_says_so():
    trials = factorial(lambda r: 0.0, seeds=2)
    trials.loc[0, ["stop_reason", "test_acc"]] = ["scheduler_stopped", np.nan]
    trials.loc[1, ["stop_reason", "test_acc"]] = ["unfinished", np.nan]
    kept, note = completed(trials)
    assert len(kept) == len(trials) - 2 and set(kept["stop_reason"]) == {"finished"}
    assert "1 scheduler_stopped" in note and "1 unfinished" in note


def test_common_epoch_includes_scheduler_stopped_trials():
    trials = pd.DataFrame({"trial_id": ["a", "b", "c"],
                           "stop_reason": ["finished", "scheduler_stopped", "errored"], "last_epoch": [3, 1, 0],
                           "attention": ["none", "channel", "none"]})
    epochs = pd.DataFrame({"trial_id": ["a", "a", "a", "b"], "epoch": [1, 2, 3, 1],
                           "val_acc": [50.0, 60, 70, 55]})
    frame, note = at_common_epoch(trials, epochs)
    assert list(frame["trial_id"]) == ["a", "b"] and list(frame["val_acc_at_epoch"]) == [50.0, 55.0]
    assert "epoch 1" in note and "1 errored" in note


def test_asha_stopped_sweep_is_only_an_early_training_screen():
    trials = pd.DataFrame({"trial_id": ["a", "b"], "stop_reason": ["finished", "scheduler_stopped"],
                           "last_epoch": [3, 2], "test_acc": [70.0, np.nan]})
    epochs = pd.DataFrame({"trial_id": ["a", "a", "a", "b", "b"], "epoch": [1, 2, 3, 1, 2],
                           "val_acc": [50.0, 60, 70, 55, 58]})
    compared = compared_trials(trials, epochs, "grid")
    assert compared.metric == "val_acc_at_epoch" and list(compared.frame["val_acc_at_epoch"]) == [60.0, 58.0]
    assert "early-training screen" in compared.label and "epoch 2" in compared.label
    assert "not final accuracy" in compared.label and not compared.effects_refused


def test_effects_are_refused_for_adaptive_searches():
    trials = factorial(lambda r: 0.0, seeds=2).assign(trial_id=lambda f: f.index.astype(str), last_epoch=3)
    for search in ("optuna", "random"):
        compared = compared_trials(trials, pd.DataFrame(), search)
        assert f"by {search} search" in compared.effects_refused and compared.metric == "test_acc"
    assert not compared_trials(trials, pd.DataFrame(), "grid").effects_refused
    assert not compared_trials(trials, pd.DataFrame(), None).effects_refused


def test_balanced_grid_gets_the_exact_anova_shares():
    """Balanced: each factor's share is its main-effect sum of squares over the total, by hand."""
    trials = factorial(lambda r: 4.0 * (r["attention"] == "channel") + 1.0 * (r["recipe"] == "holistic"), seeds=3)
    ranking, note = importance(trials, ["attention", "dsconv", "recipe"])
    y = trials["test_acc"]
    total = ((y - y.mean()) ** 2).sum()
    for factor in ("attention", "dsconv", "recipe"):
        by_hand = (trials.groupby(factor)["test_acc"].transform("mean") - y.mean()).pow(2).sum() / total
        assert ranking.set_index("factor").loc[factor, "importance"] == pytest.approx(by_hand)
    assert list(ranking["factor"])[:2] == ["attention", "recipe"] and list(ranking["factor"])[-1] == REST
    assert ranking["importance"].sum() == pytest.approx(1.0) and "exact ANOVA" in note and "n = 24" in note


def unbalanced(trials: pd.DataFrame) -> pd.DataFrame:
    return trials.drop(index=trials.index[:1]).reset_index(drop=True)  # one trial lost: fANOVA


def test_fanova_is_unnormalised_with_the_rest_as_a_row():
    trials = unbalanced(factorial(lambda r: 4.0 * (r["attention"] == "channel"), seeds=3))
    ranking, note = importance(trials, ["attention", "dsconv", "recipe"])
    assert list(ranking["factor"])[0] == "attention" and ranking["importance"].iloc[0] > 0.8
    assert list(ranking["factor"])[-1] == REST and ranking["importance"].sum() == pytest.approx(1.0)
    assert set(ranking["n"]) == {23} and "not normalised" in note and "n = 23" in note
    assert ranking.equals(importance(trials, ["attention", "dsconv", "recipe"])[0])  # seeded


def test_fanova_leaves_unexplained_variance_to_the_rest_row():
    """Pure noise: no factor explains the metric, and the table must not say otherwise (normalised
    importances would still sum to 1 over the factors)."""
    for trials in (factorial(lambda r: 0.0, seeds=3, noise=1.0),):
        for frame in (trials, unbalanced(trials)):  # ANOVA, then fANOVA
            ranking, _ = importance(frame, ["attention", "dsconv", "recipe"])
            factors_share = ranking.loc[ranking["factor"] != REST, "importance"].sum()
            assert factors_share < 0.5 and ranking.set_index("factor").loc[REST, "importance"] > 0.5


def test_fanova_refused_on_too_few_trials_or_nothing_to_explain():
    small = unbalanced(factorial(lambda r: 4.0 * (r["attention"] == "channel"), seeds=1))
    ranking, note = importance(small, ["attention"])
    assert ranking.empty and "7 trials" in note and f"fewer than {MIN_TRIALS}" in note
    ranking, note = importance(factorial(lambda r: 0.0, seeds=3).assign(test_acc=1.0), ["attention"])
    assert ranking.empty and "constant" in note


def test_stage_table_paper_column_and_differences_are_exact():
    rows = [{"stage": stage, "seed": seed, "stop_reason": "finished", "test_acc": 70.0 + i + seed,
             "params": 1e6 * (i + 1), "flops": 2e8, "wall_time_s": 600.0 * (seed + 1), **STUDY_DATA}
            for i, stage in enumerate(PAPER_STAGE_ACCURACY) for seed in (0, 2)]
    rows.append({"stage": "holistic", "seed": 9, "stop_reason": "unfinished", "test_acc": np.nan, **STUDY_DATA})
    table = stage_table(pd.DataFrame(rows))
    assert list(table["stage"]) == list(PAPER_STAGE_ACCURACY)
    assert list(table["paper_test_acc"]) == [74.09, 81.90, 67.23, 67.96, 86.86]
    assert list(table["test_acc_mean"]) == [71.0, 72.0, 73.0, 74.0, 75.0]
    assert list(table["diff_vs_paper"]) == [71 - 74.09, 72 - 81.90, 73 - 67.23, 74 - 67.96, 75 - 86.86]
    assert list(table["n"]) == [2] * 5 and list(table["n_other"]) == [0, 0, 0, 0, 1]
    assert table["test_acc_std"].iloc[0] == pytest.approx(np.sqrt(2))
    assert list(table["params_m_mean"]) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert table["gflops_mean"].iloc[0] == pytest.approx(0.2) and table["time_min_mean"].iloc[0] == 20.0


def test_stage_steps_recover_known_steps_with_seeds_as_blocks_and_cover_them():
    """Stages with known means, a large per-seed shift shared by every stage (a seed fixes the split)
    and small noise: each step is the difference of consecutive stage means, the seed shift cancels,
    the 95% intervals cover the truth about 95% of the time, and the Holm column is statsmodels'."""
    means = dict(zip(PAPER_STAGE_ACCURACY, (80.0, 84.0, 84.0, 84.0, 88.0)))
    truth = [4.0, 0.0, 0.0, 4.0]

    def trials(rng, seeds=3):
        shift = rng.normal(0, 5, seeds)
        return pd.DataFrame([{"stage": st, "seed": seed, "stop_reason": "finished",
                              "test_acc": mu + shift[seed] + rng.normal(0, 0.4)}
                             for st, mu in means.items() for seed in range(seeds)])

    rng = np.random.default_rng(0)
    frame = trials(rng)
    frame.loc[len(frame)] = {"stage": "holistic", "seed": 3, "stop_reason": "errored", "test_acc": np.nan}
    table, model = stage_steps(frame)
    assert list(table["step"]) == [f"{a} -> {b}" for a, b in zip(list(means), list(means)[1:])]
    assert table["effect"].to_numpy() == pytest.approx(truth, abs=1.5)  # seed shifts of sd 5 removed
    assert list(table["n_from"]) == [3] * 4 and list(table["n_to"]) == [3] * 4  # the errored trial left out
    assert "seed as a block" in model and "n = 15 trials" in model and "residual df = 8" in model
    assert list(table["paper_step"]) == pytest.approx([7.81, -14.67, 0.73, 18.90])
    assert table["p_holm"].to_numpy() == pytest.approx(
        multipletests(table["p"], method="holm")[1]) and list(table["significant"]) == [True, False, False, True]
    covered = [(t["ci_low"] <= truth[i] <= t["ci_high"]) for _ in range(80)
               for i, t in enumerate(stage_steps(trials(rng))[0].to_dict("records"))]  # 80 draws x 4 steps
    assert 0.90 <= np.mean(covered) <= 0.99
    # Fewer than two stages ended: no steps, and why.
    table, why = stage_steps(frame[frame["stage"] == "baseline"])
    assert table.empty and "fewer than two" in why


def test_the_studies_figures_are_compared_only_on_the_studies_data():
    """A synthetic 16x16 smoke run or a CIFAR-10 subset is no replication of a full CIFAR-10 run: the
    published figures stay as context, without a difference, under a one-line caveat."""
    rows = [{"stage": "baseline", "seed": seed, "stop_reason": "finished", "test_acc": 10.15 + seed,
             "params": 1e5, "flops": 1e7, "wall_time_s": 6.0, "dataset": "synthetic", "subset": 512,
             "image_size": 16} for seed in (0, 1)]
    table = stage_table(pd.DataFrame(rows))
    assert "diff_vs_paper" not in table and table["paper_test_acc"].iloc[0] == 74.09
    caveat = study_data_caveat(pd.DataFrame(rows))
    assert caveat.startswith("**Not comparable:**") and "synthetic (512 images, 16x16)" in caveat
    assert "\n" not in caveat
    full = pd.DataFrame(rows).assign(**STUDY_DATA)
    assert study_data_caveat(full) == "" and "diff_vs_paper" in stage_table(full)
    resnets = pd.DataFrame([{"recipe": "resnet_study", "model": m, "pretrained": m == "resnet152", "seed": 0,
                             "stop_reason": "finished", "test_acc": 80.0, "wall_time_s": 60.0, "epochs_run": 50,
                             "params": 1e7, **STUDY_DATA, "subset": 5000} for m in ("resnet18", "resnet152")])
    depth = depth_table(resnets)
    assert not depth["comparable"].any() and depth["diff_vs_paper"].isna().all()
    assert depth_table(resnets.assign(subset=0))["comparable"].all()


def test_stage_names_match_the_sweep_presets():
    from study.trial import STAGES

    assert list(PAPER_STAGE_ACCURACY) == list(STAGES)


def test_depth_table_relative_increases_and_paper_figures():
    rows = [{"recipe": "resnet_study", "model": model, "seed": seed, "stop_reason": "finished",
             "test_acc": acc + seed, "wall_time_s": 60.0 * minutes, "epochs_run": 50, "params": 1e7,
             "pretrained": model == "resnet152", **STUDY_DATA}
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
    trials = factorial(lambda r: 0.0, seeds=3).assign(dropout=np.linspace(0.0, 0.5, 24))
    assert effects.designed_factors(trials, ["dropout", "dsconv"]) == ["dsconv"]
    ranking, _ = importance(trials, ["dropout", "dsconv"])
    assert set(ranking["factor"]) == {"dropout", "dsconv", REST}


def test_every_axis_of_the_space_is_a_factor_and_detection_is_only_the_fallback():
    """32 random draws of the hparams space: each continuous draw is unique, so detecting factors
    from the data keeps the first and finds every other column 'determined' by it. With the sweep
    record's axes, every searched knob is a factor and gets an importance row."""
    rng = np.random.default_rng(0)
    axes = ("lr", "weight_decay", "batch_size", "scheduler", "label_smoothing", "clip_grad_norm", "augment",
            "dropout", "seed")
    trials = pd.DataFrame({"lr": rng.uniform(1e-3, 0.4, 32), "weight_decay": rng.uniform(1e-5, 1e-2, 32),
                           "batch_size": rng.choice([64, 128, 256], 32),
                           "scheduler": rng.choice(["onecycle", "cosine", "step", "none"], 32),
                           "label_smoothing": rng.uniform(0, 0.2, 32), "clip_grad_norm": rng.choice([0.0, 2.0], 32),
                           "augment": rng.choice(["none", "basic", "paper"], 32), "dropout": rng.uniform(0, 0.6, 32),
                           "seed": 0, "model": "squeezenet"})
    trials["test_acc"] = 60 + 40 * trials["lr"] + rng.normal(0, 1, 32)
    columns = ("model", *axes)
    assert len(ablation_factors(trials, columns)) < 8  # detection misses searched knobs
    factors = ablation_factors(trials, columns, axes)
    assert sorted(factors) == sorted(a for a in axes if a != "seed")
    ranking, _ = importance(trials, factors)
    assert set(ranking["factor"]) == {*factors, REST}


def test_pareto_plot_tick_labels_do_not_overlap():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from analysis.plots import pareto_plot

    rng = np.random.default_rng(1)
    trials = pd.DataFrame({"arm": np.repeat(list("abcdef"), 2), "test_acc": rng.uniform(80, 90, 12),
                           "params": np.repeat([48_058, 59_000, 187_000, 740_554, 1_234_567, 1_517_000], 2),
                           "flops": np.repeat([3.6e6, 5e6, 1.8e7, 2.1e8, 2.6e8, 4.4e8], 2),
                           "latency_ms_b1": np.repeat([0.31, 0.5, 0.9, 1.3, 2.2, 4.6], 2)})
    fig = pareto_plot(arm_summary(trials, ["arm"]))
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    for ax in fig.axes:
        boxes = [t.get_window_extent(renderer) for t in ax.get_xticklabels() if t.get_text() and t.get_visible()]
        boxes = [b for b in boxes if ax.bbox.x0 - 5 <= (b.x0 + b.x1) / 2 <= ax.bbox.x1 + 5]
        assert len(boxes) >= 2
        assert all(a.x1 < b.x0 for a, b in zip(sorted(boxes, key=lambda b: b.x0), sorted(boxes, key=lambda b: b.x0)[1:]))


def test_mean_std_shows_equal_values_with_a_zero_spread():
    values = pd.Series([97826.0] * 3) * 1e-6  # the float sum leaves a std of 1.7e-17
    assert values.std() > 0 and mean_std(values.mean(), values.std(), ".3g") == "0.0978 ± 0"
    assert mean_std(81.234, 0.4, ".2f") == "81.23 ± 0.40" and mean_std(float("nan"), 1.0) == ""


def test_verdict_sentences_follow_the_tests():
    from analysis import verdicts

    row = {"effect": 1.45, "ci_low": 0.38, "ci_high": 2.52, "method": "paired", "n": 3, "p_holm": 0.057,
           "significant": False, "p_equivalent_holm": 1.0, "margin_shown": 2.18, "seeds_needed": 8.0}
    text = verdicts.directional("Removing X costs test accuracy", row, +1, 0.5)
    # the estimate is beyond the margin: more seeds would show a difference, so no seeds for equivalence
    assert text == ("Removing X costs test accuracy: **inconclusive** (+1.45 points [0.38, 2.52], paired over 3 seeds, "
                    "Holm p 0.057; within ±0.5 not shown either (TOST Holm p 1; the smallest margin these numbers "
                    "show, before Holm's adjustment, is ±2.18)).")
    inside = verdicts.directional("Removing X costs test accuracy", {**row, "effect": 0.2}, +1, 0.5)
    assert inside.endswith("show, before Holm's adjustment, is ±2.18; about 8 seeds would give ±0.5 an 80% chance)).")
    assert "**supported**" in verdicts.directional("X", {**row, "p_holm": 0.01, "significant": True}, +1, 0.5)
    assert "**not supported**" in verdicts.directional("X", {**row, "p_holm": 0.01, "significant": True}, -1, 0.5)
    assert "**not supported** (+1.45 points" in verdicts.directional("X", {**row, "p_equivalent_holm": 0.01}, +1, 0.5)
    assert "**supported, lower**" in verdicts.two_sided("X", {**row, "effect": -1.0, "significant": True})
    cost = {("cost" if k == "effect" else k): v for k, v in row.items()}  # the leave-one-out table's column
    assert verdicts.directional("X", {**cost, "significant": True}, +1, 0.5, estimate="cost") == (
        "X: **supported** (+1.45 points [0.38, 2.52], paired over 3 seeds, Holm p 0.057).")  # no TOST clause


def test_a_welch_contrast_gets_its_equivalence_test_and_the_seeds_it_needs():
    from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

    from analysis import contrasts

    a, b = np.array([85.1, 85.4, 84.9, 85.2]), np.array([85.0, 85.3, 85.2])
    c = contrasts.welch(a, b, 0.5)
    expected = CompareMeans(DescrStatsW(a), DescrStatsW(b)).ttost_ind(-0.5, 0.5, usevar="unequal")[0]
    assert c.method == "welch" and c.p_equivalent == pytest.approx(expected) and c.seeds_needed >= 2
    assert c.margin_shown < 0.5 and c.p_equivalent < 0.05  # close arms, little noise: within ±0.5 shown


def test_a_many_cell_contrast_with_a_lost_trial_falls_back_to_the_seed_blocked_model():
    """Pairing would drop the lost trial's whole seed (a third of the data): the model's estimate instead."""
    trials = factorial(lambda r: 1.0 * (r["attention"] == "channel"), seeds=3)
    ff = effects.fit(trials.drop(index=[0]), ["recipe", "attention", "dsconv"])
    row = effects.main_effects(ff).set_index("factor").loc["attention"]
    assert row["method"] == "pooled" and row["effect"] == pytest.approx(row["emm"] - row["emm_ref"])
    full = effects.main_effects(effects.fit(trials, ["recipe", "attention", "dsconv"])).set_index("factor")
    assert full.loc["attention", "method"] == "paired" and full.loc["attention", "seeds"] == 3
