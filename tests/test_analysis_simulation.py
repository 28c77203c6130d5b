"""The factorial estimates checked by simulation against known truth (plain numbers, no training).

A 2x2x2 design (attention x dsconv x recipe) with seeds as blocks: every arm of one seed shares a
seed offset (sd 2 points, far larger than the noise, as a real seed's split and data order are),
plus trial noise (sd 0.5). The true main effect of a factor is the equal-weight mean over the other
factors' cells of the difference of cell means (the estimand of analysis.factorial); 200 replicates
per scenario, balanced and with missing trials, with and without an interaction.
"""
import gc
import itertools

import numpy as np
import pandas as pd
import pytest

from analysis import effects

FACTORS = ("recipe", "attention", "dsconv")
LEVELS = {"recipe": ("baseline", "holistic"), "attention": ("none", "channel"), "dsconv": (False, True)}
REPLICATES = 200


@pytest.fixture(autouse=True, scope="module")
def cheap_gc():
    """statsmodels' Holm (multipletests) calls gc.collect() on every call: 75 ms each with the test
    process's heap, most of this file's time. Frozen objects are not scanned."""
    gc.freeze()
    yield
    gc.unfreeze()


def cell_mean(cell: dict, interaction: float) -> float:
    """70 + recipe 15 + attention 1 + dsconv 0; the interaction adds to channel attention under the
    holistic recipe only."""
    holistic, channel = cell["recipe"] == "holistic", cell["attention"] == "channel"
    return 70 + 15 * holistic + 1.0 * channel + interaction * (holistic and channel)


def true_effects(interaction: float) -> dict[str, float]:
    cells = [dict(zip(FACTORS, values)) for values in itertools.product(*LEVELS.values())]
    out = {}
    for factor in FACTORS:
        ref, level = LEVELS[factor]
        out[factor] = np.mean([cell_mean({**c, factor: level}, interaction) - cell_mean({**c, factor: ref}, interaction)
                               for c in cells if c[factor] == ref])
    return out


def simulate(rng, interaction=0.0, seeds=3, drop=0.0, null=False) -> pd.DataFrame:
    offsets = rng.normal(0, 2.0, seeds)
    rows = []
    for values in itertools.product(*LEVELS.values(), range(seeds)):
        cell = dict(zip((*FACTORS, "seed"), values))
        mean = 70.0 if null else cell_mean(cell, interaction)
        rows.append({**cell, "test_acc": mean + offsets[cell["seed"]] + rng.normal(0, 0.5)})
    frame = pd.DataFrame(rows)
    if drop:  # lose trials (errors, a killed node), never a whole arm
        lose = [i for i in frame.index if rng.random() < drop]
        keep = frame.drop(index=lose)
        for values, group in frame.groupby(list(FACTORS)):
            if not ((keep[list(FACTORS)] == pd.Series(dict(zip(FACTORS, values)))).all(axis=1)).any():
                keep = pd.concat([keep, group.iloc[[0]]])
        frame = keep.reset_index(drop=True)
    return frame


@pytest.mark.parametrize("interaction,drop", [(0.0, 0.0), (2.0, 0.0), (2.0, 0.25)],
                         ids=["additive", "interaction", "interaction-missing-trials"])
def test_intervals_cover_and_estimates_are_unbiased(interaction, drop):
    rng = np.random.default_rng(12345)
    truth = true_effects(interaction)
    covered, errors = [], {f: [] for f in FACTORS}
    inter_covered = []
    for _ in range(REPLICATES):
        ff = effects.fit(simulate(rng, interaction, drop=drop), FACTORS)
        table = effects.main_effects(ff).set_index("factor")
        for factor in FACTORS:
            row = table.loc[factor]
            covered.append(row["ci_low"] <= truth[factor] <= row["ci_high"])
            errors[factor].append(row["effect"] - truth[factor])
        inter = effects.recipe_interactions(ff).set_index("factor").loc["attention"]
        inter_covered.append(inter["ci_low"] <= interaction <= inter["ci_high"])
    assert 0.92 <= np.mean(covered) <= 0.98, np.mean(covered)
    assert 0.92 <= np.mean(inter_covered) <= 0.98, np.mean(inter_covered)
    for factor, err in errors.items():
        assert abs(np.mean(err)) < 0.1, (factor, np.mean(err))


def test_holm_family_rejects_at_most_five_percent_under_the_null():
    rng = np.random.default_rng(7)
    any_rejected = [effects.main_effects(effects.fit(simulate(rng, null=True), FACTORS))["significant"].any()
                    for _ in range(REPLICATES)]
    # 5% plus two binomial standard errors at n = 200
    assert np.mean(any_rejected) <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / REPLICATES)


def test_seed_blocks_and_missing_trials_do_not_move_the_estimate():
    """The review's case: true effect +1, recipe +15, noise sd 0.3, 3 seeds. Pooling gave
    0.80 [-9.76, 11.35] and jumped to 4.43 after losing 2 trials of one cell."""
    rng = np.random.default_rng(0)
    offsets = rng.normal(0, 2.0, 3)
    rows = [{"attention": a, "recipe": r, "seed": s,
             "test_acc": 70 + 1.0 * (a == "channel") + 15 * (r == "holistic") + offsets[s] + rng.normal(0, 0.3)}
            for a, r, s in itertools.product(("none", "channel"), ("baseline", "holistic"), range(3))]
    full = pd.DataFrame(rows)
    row = effects.main_effects(effects.fit(full, ["recipe", "attention"])).set_index("factor").loc["attention"]
    assert row["pooled_ci_low"] < 1.0 < row["pooled_ci_high"] and row["pooled_ci_high"] - row["pooled_ci_low"] < 1.5
    assert row["method"] == "paired" and row["ci_low"] < 1.0 < row["ci_high"] and row["ci_high"] - row["ci_low"] < 2.5
    cut = full.drop(index=full[(full["attention"] == "channel") & (full["recipe"] == "holistic")].index[:2])
    ff = effects.fit(cut, ["recipe", "attention"])
    row = effects.main_effects(ff).set_index("factor").loc["attention"]
    assert abs(row["effect"] - 1.0) < 0.6 and (row["n"], row["n_ref"]) == (4, 6)
    assert ff.n == 10 and "n = 10 trials" in ff.describe()
