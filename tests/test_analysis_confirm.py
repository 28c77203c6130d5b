"""Screen ranking, the confirm set, and the confirm phase's estimates, checked against known truth
(plain numbers, no training): the leave-one-out costs by simulation (bias, interval coverage)."""
import gc

import numpy as np
import pandas as pd
import pytest

from analysis import confirm
from study import selection

FACTORS = ["attention", "dsconv", "recipe"]
REFERENCES = {"attention": "none", "dsconv": False, "recipe": "baseline"}
BEST = {"attention": "channel", "dsconv": True, "recipe": "holistic"}


@pytest.fixture(autouse=True, scope="module")
def cheap_gc():
    """statsmodels' Holm calls gc.collect() on every call; frozen objects are not scanned."""
    gc.freeze()
    yield
    gc.unfreeze()


def screen_frames():
    """Four arms under an ASHA-like screen: two stopped at epoch 2, one at 6, one ran to 10. The arm
    that ran deepest ranks first even though a stopped arm had a higher early val accuracy."""
    arms = [({"attention": "none", "dsconv": False, "recipe": "baseline"}, 2, [50, 52]),
            ({"attention": "channel", "dsconv": False, "recipe": "baseline"}, 2, [60, 61]),
            ({"attention": "none", "dsconv": True, "recipe": "holistic"}, 6, [40, 45, 55, 57, 58, 59]),
            (BEST, 10, [30, 40, 50, 55, 57, 58, 59, 60, 61, 62])]
    trials, epochs = [], []
    for i, (arm, depth, curve) in enumerate(arms):
        tid = f"t{i}"
        trials.append({"trial_id": tid, **arm, "seed": 0})
        epochs += [{"trial_id": tid, "epoch": e + 1, "val_acc": v} for e, v in enumerate(curve[:depth])]
    return pd.DataFrame(trials), pd.DataFrame(epochs)


def test_the_screen_ranks_by_depth_then_validation_accuracy():
    trials, epochs = screen_frames()
    ranking = selection.screen_ranking(trials, epochs, FACTORS)
    assert ranking[FACTORS].iloc[0].to_dict() == BEST
    assert list(ranking["deepest_epoch"]) == [10, 6, 2, 2]
    assert ranking.iloc[2]["attention"] == "channel"  # 61 > 52 at the same depth
    assert list(ranking["rank"]) == [1, 2, 3, 4]


def test_the_confirm_set_is_top_k_plus_the_best_arms_neighbours_plus_the_baseline_each_once():
    trials, epochs = screen_frames()
    ranking = selection.screen_ranking(trials, epochs, FACTORS)
    chosen = selection.confirm_set(ranking, FACTORS, REFERENCES, top=2)
    arms = [tuple(r) for r in chosen[FACTORS].itertuples(index=False)]
    assert arms == [("channel", True, "holistic"), ("none", True, "holistic"),  # top 2; rank 2 is also a neighbour
                    ("channel", False, "holistic"), ("channel", True, "baseline"),
                    ("none", False, "baseline")]
    assert chosen["why"][1] == "screen rank 2; without attention=channel (-> none)"
    assert chosen["why"].iloc[-1] == "all-reference baseline"
    # An adaptive search has no reference levels: the top arms only.
    assert len(selection.confirm_set(ranking, FACTORS, None, top=3)) == 3
    # The best arm at every reference: no neighbours, and the baseline is the best arm itself.
    base_first = ranking.iloc[[2, 0, 1, 3]]
    base_first = base_first.assign(**REFERENCES).iloc[:1]
    assert len(selection.confirm_set(base_first, FACTORS, REFERENCES, top=1)) == 1


TRUE_MEANS = {("channel", True, "holistic"): 85.0, ("none", True, "holistic"): 83.0,
              ("channel", False, "holistic"): 85.0, ("channel", True, "baseline"): 70.0,
              ("none", False, "baseline"): 68.0}


def simulate(rng, seeds=3):
    """Every confirm arm with the same seeds; a seed offset (sd 2) shared by the arms of a seed."""
    offsets = rng.normal(0, 2.0, seeds)
    rows = []
    for arm, mean in TRUE_MEANS.items():
        for seed in range(seeds):
            value = mean + offsets[seed] + rng.normal(0, 0.5)
            rows.append({**dict(zip(FACTORS, arm)), "seed": 100 + seed, "test_acc": value,
                         "best_val_acc": value + rng.normal(0, 0.3)})
    return pd.DataFrame(rows)


def test_leave_one_out_costs_and_arm_means_are_unbiased_and_their_intervals_cover_by_simulation():
    rng = np.random.default_rng(11)
    truth = {"attention": 2.0, "dsconv": 0.0, "recipe": 15.0}
    costs = {f: [] for f in truth}
    covered = {f: 0 for f in truth}
    mean_covered = shown = 0
    replicates = 200
    for _ in range(replicates):
        frame = simulate(rng)
        ff = confirm.fit_arms(frame, FACTORS, BEST)
        table = confirm.leave_one_out_table(ff, BEST, REFERENCES, FACTORS)
        best = confirm.arm_means(frame, FACTORS).set_index("arm").loc[selection.arm_label(BEST, FACTORS)]
        mean_covered += best["ci_low"] <= TRUE_MEANS[tuple(BEST.values())] <= best["ci_high"]
        for row in table.to_dict("records"):
            factor = next(f for f in FACTORS if row["arm"] == selection.arm_label({**BEST, f: REFERENCES[f]}, FACTORS))
            costs[factor].append(row["cost"])
            covered[factor] += row["ci_low"] <= truth[factor] <= row["ci_high"]
            shown += factor == "attention" and row["ci_low"] > 0
    for factor, true in truth.items():
        assert abs(np.mean(costs[factor]) - true) < 0.1
        assert 0.91 <= covered[factor] / replicates <= 0.99  # nominal 95%, 200 replicates: +-3 points
    assert 0.91 <= mean_covered / replicates <= 0.99  # an arm's mean: its seeds' scatter included
    # Paired by seed: the interval's width reflects the trial noise (sd 0.5), not the seed offsets (sd 2).
    table = confirm.leave_one_out_table(confirm.fit_arms(simulate(rng), FACTORS, BEST), BEST, REFERENCES, FACTORS)
    assert (table["ci_high"] - table["ci_low"]).max() < 4.0
    assert shown / replicates > 0.5  # a cost of 2 (trial noise sd 0.5, 2 df) found in most replicates (0.68)
    assert set(table["method"]) == {"paired"}


def test_the_confirmed_ranking_selects_on_validation_and_reports_test_with_an_interval():
    rng = np.random.default_rng(3)
    frame = simulate(rng)
    ff = confirm.fit_arms(frame, FACTORS, BEST)
    means = confirm.arm_means(frame, FACTORS)
    assert list(means["mean_best_val"]) == sorted(means["mean_best_val"], reverse=True)
    assert set(means["n"]) == {3}
    assert (means["ci_low"] < means["mean"]).all() and (means["mean"] < means["ci_high"]).all()
    loo = confirm.leave_one_out_table(ff, BEST, REFERENCES, FACTORS)
    line = confirm.summary_line(BEST, FACTORS, means, loo, REFERENCES)
    head, *rest = line.split("\n")
    assert head.startswith("confirmed best arm ") and "leave" not in line
    # one line per component removed, with its unit, interval and verdict; the header says what + means
    header = next(i for i, r in enumerate(rest) if "points lost (+: it helped)" in r)
    assert any(r.startswith("    without recipe=holistic (-> baseline): +") and " points [" in r and r.endswith("it helped")
               for r in rest[header + 1:])


def test_one_seed_gives_estimates_without_intervals():
    frame = simulate(np.random.default_rng(0), seeds=1)
    ff = confirm.fit_arms(frame, FACTORS, BEST)
    table = confirm.leave_one_out_table(ff, BEST, REFERENCES, FACTORS)
    assert table["cost"].notna().all() and table["ci_low"].isna().all() and not table["significant"].any()


def square_frame(rng, noise=0.2, seeds=4):
    """A 2x2 of residual x recipe (attention at none) plus one more arm, seeds as blocks: residual
    +0.5 under the baseline recipe, +2.0 under the holistic one (interaction +1.5), recipe +1."""
    means = {("none", "none", "baseline"): 84.0, ("none", "simple", "baseline"): 84.5,
             ("none", "none", "holistic"): 85.0, ("none", "simple", "holistic"): 87.0,
             ("channel", "simple", "holistic"): 86.0}
    offsets = rng.normal(0, 2.0, seeds)
    rows = [{"attention": a, "residual": r, "recipe": c, "seed": s, "test_acc": m + offsets[s] + rng.normal(0, noise),
             "best_val_acc": m + offsets[s] + rng.normal(0, noise)}
            for (a, r, c), m in means.items() for s in range(seeds)]
    return pd.DataFrame(rows)


def test_a_two_by_two_among_the_confirm_arms_is_found_and_its_interaction_measured():
    from analysis import subdesigns

    factors = ["attention", "residual", "recipe"]
    frame = square_frame(np.random.default_rng(4))
    arms = frame[factors].drop_duplicates()
    found = subdesigns.squares(arms, factors, {"attention": "none", "residual": "none", "recipe": "baseline"})
    assert [(s["f"], s["g"], s["f_levels"], s["g_levels"], s["fixed"]) for s in found] == [
        ("residual", "recipe", ("none", "simple"), ("baseline", "holistic"), {"attention": "none"})]
    ff = confirm.fit_arms(frame, factors, arms.iloc[0].to_dict())
    table = subdesigns.subdesign_table(ff, arms, lambda levels: selection.arm_label(levels, factors),
                                       {"attention": "none", "residual": "none", "recipe": "baseline"}, 0.5)
    rows = table.set_index("contrast")
    truth = {"residual=simple vs none, at recipe=baseline": 0.5, "residual=simple vs none, at recipe=holistic": 2.0,
             "residual=simple vs none, main effect (mean over recipe)": 1.25,
             "recipe=holistic vs baseline, main effect (mean over residual)": 1.75,
             "interaction: (residual=simple vs none) at recipe=holistic minus at recipe=baseline": 1.5}
    for name, value in truth.items():
        assert rows.loc[name, "ci_low"] < value < rows.loc[name, "ci_high"] and rows.loc[name, "method"] == "paired"
    assert rows.loc["residual=simple vs none, at recipe=holistic", "verdict"] == "helped"
    assert rows.loc[list(truth)[-1], "verdict"] == "larger at recipe=holistic"
    assert len(table) == 7 and (table["p_holm"] >= table["p"]).all()


def test_the_confirmed_best_is_compared_with_every_arm_and_its_chance_of_being_best_stated():
    factors = ["attention", "residual", "recipe"]
    frame = square_frame(np.random.default_rng(5))
    means = confirm.arm_means(frame, factors)
    ff = confirm.fit_arms(frame, factors, means.iloc[0]["arm"], by_label=True)
    table = confirm.best_comparisons(ff, means, 0.5)
    assert table.loc[0, "arm"] == "attention=none, residual=simple, recipe=holistic" and table.loc[0, "chance_best"] > 0.9
    assert table["chance_best"].sum() == pytest.approx(1.0)
    behind = table.set_index("arm").loc["attention=none, residual=none, recipe=baseline"]
    assert behind["difference"] == pytest.approx(3.0, abs=0.5) and behind["verdict"] == "behind the confirmed best"
    # Two truly equal arms, many seeds, little noise: equivalence within the margin is shown.
    rng = np.random.default_rng(6)
    offsets = rng.normal(0, 2, 12)
    equal = pd.DataFrame([{"attention": a, "seed": s, "test_acc": 85 + offsets[s] + rng.normal(0, 0.1),
                           "best_val_acc": 85 + (a == "none") + offsets[s]} for a in ("none", "channel") for s in range(12)])
    means = confirm.arm_means(equal, ["attention"])
    table = confirm.best_comparisons(confirm.fit_arms(equal, ["attention"], means.iloc[0]["arm"], by_label=True), means, 0.5)
    assert table.loc[1, "verdict"] == "equivalent within the margin" and table.loc[1, "margin_shown"] < 0.5


def test_chance_best_draws_only_the_seeds_every_arm_ran():
    factors = ["attention", "residual", "recipe"]
    frame = square_frame(np.random.default_rng(5))
    gone = frame.index[(frame["recipe"] == "holistic") & (frame["residual"] == "simple") & (frame["seed"] == 0)]
    ff = confirm.fit_arms(frame.drop(index=gone), factors, {"attention": "none", "residual": "none",
                                                          "recipe": "baseline"})
    shares = confirm.chance_best(ff)
    assert sum(shares.values()) == pytest.approx(1.0) and len(shares) == 5
    one_seed = frame[frame["seed"] == 0]
    assert confirm.chance_best(confirm.fit_arms(one_seed, factors, {"attention": "none", "residual": "none",
                                                                    "recipe": "baseline"})) == {}
