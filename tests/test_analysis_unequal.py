"""Every interval kind the report prints, checked by simulation with UNEQUAL spreads across arms:
arms whose seed-to-seed spread differs from 0.2 to 4 points, as the committed stages' do (0 to
10). 1,000 draws per check, so a coverage within 0.93-0.97 is nominal 95% within about
three binomial standard errors (0.0069). Plain numbers, no training: analysis.contrasts directly
(what every paired and Welch interval of the report is made by) and the pooled model beside it.
"""
import gc
import itertools

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.power import TTestPower
from statsmodels.stats.weightstats import DescrStatsW

from analysis import contrasts, factorial, lenth

DRAWS = 1000
BAND = (0.93, 0.97)


@pytest.fixture(autouse=True, scope="module")
def cheap_gc():
    """statsmodels' Holm (multipletests) calls gc.collect() on every call; frozen objects are not scanned."""
    gc.freeze()
    yield
    gc.unfreeze()


def arms_by_seed(rng, means: dict, spreads: dict, seeds: int, offset_sd: float = 2.0) -> pd.DataFrame:
    """Arms as columns, seeds as rows: mean + a seed offset shared by every arm of the seed + the
    arm's own noise (sd `spreads[arm]`)."""
    offsets = rng.normal(0, offset_sd, seeds)
    return pd.DataFrame({arm: means[arm] + offsets + rng.normal(0, spreads[arm], seeds) for arm in means})


def test_paired_intervals_cover_with_unequal_spreads():
    """A quiet arm against a noisy one, and a 2x2 interaction of four arms of spreads 0.2 to 4, three
    seeds (the confirm phase's default): the paired intervals cover the truth 93-97% of the time."""
    rng = np.random.default_rng(2025)
    means = {"a": 86.0, "b": 85.0, "c": 84.0, "d": 85.5}
    spreads = {"a": 0.2, "b": 4.0, "c": 1.0, "d": 0.5}
    difference = {"a": 1.0, "b": -1.0}
    interaction = {"a": 1.0, "b": -1.0, "c": -1.0, "d": 1.0}
    truth = {name: sum(w * means[arm] for arm, w in weights.items())
             for name, weights in (("difference", difference), ("interaction", interaction))}
    covered = {name: 0 for name in truth}
    for _ in range(DRAWS):
        table = arms_by_seed(rng, means, spreads, seeds=3)
        for name, weights in (("difference", difference), ("interaction", interaction)):
            c = contrasts.seedwise(table, weights)
            covered[name] += c.ci_low <= truth[name] <= c.ci_high
    for name, hits in covered.items():
        assert BAND[0] <= hits / DRAWS <= BAND[1], (name, hits / DRAWS)


def test_welch_intervals_cover_unpaired_arms_with_unequal_spreads_and_sizes():
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(DRAWS):
        a, b = rng.normal(80.0, 0.5, 4), rng.normal(78.0, 4.0, 6)
        c = contrasts.welch(a, b)
        covered += c.ci_low <= 2.0 <= c.ci_high
    assert c.method == "welch" and BAND[0] <= covered / DRAWS <= BAND[1], covered / DRAWS


def test_an_arms_own_interval_covers_its_mean_whatever_its_spread():
    """The confirmed ranking's per-arm interval (DescrStatsW over the arm's seeds), seed offsets included."""
    rng = np.random.default_rng(3)
    for spread in (0.2, 4.0):
        covered = 0
        for _ in range(DRAWS):
            values = 85.0 + rng.normal(0, 2.0, 3) + rng.normal(0, spread, 3)
            low, high = DescrStatsW(values).tconfint_mean(alpha=0.05)
            covered += low <= 85.0 <= high
        assert BAND[0] <= covered / DRAWS <= BAND[1], (spread, covered / DRAWS)


def test_the_pooled_interval_misleads_where_spreads_differ_and_the_paired_one_does_not():
    """Why the pooled model is only the second column: five stages of spreads 0.01 to 6 points and
    three seeds, the step between the two quiet stages. Its pooled interval borrows the noisy stages'
    variance (covers far more than 95%, so a real step is missed) and the step between the noisy and a
    quiet stage borrows the quiet ones' (covers less); the paired interval is nominal for both."""
    rng = np.random.default_rng(11)
    stages = ["s0", "s1", "s2", "s3", "s4"]
    means = dict(zip(stages, (79.0, 56.0, 10.0, 59.0, 84.5)))
    spreads = dict(zip(stages, (0.3, 6.0, 0.01, 6.0, 0.3)))
    pairs = {"quiet": ("s4", "s0"), "noisy": ("s3", "s2")}
    paired = {name: 0 for name in pairs}
    pooled = {name: 0 for name in pairs}
    draws = 400  # the pooled model is an OLS fit per draw; the paired side is checked at 1,000 above
    for _ in range(draws):
        table = arms_by_seed(rng, means, spreads, seeds=3)
        frame = table.rename_axis("seed").reset_index().melt("seed", var_name="stage", value_name="test_acc")
        ff = factorial.fit_factorial(frame, ["stage"], "test_acc", {"stage": "s0"})
        for name, (after, before) in pairs.items():
            truth = means[after] - means[before]
            c = contrasts.seedwise(table, {after: 1.0, before: -1.0})
            paired[name] += c.ci_low <= truth <= c.ci_high
            vector = factorial.contrast(ff, "stage", after) - factorial.contrast(ff, "stage", before)
            est = factorial.estimate(ff, vector)
            pooled[name] += est.ci_low <= truth <= est.ci_high
    for name in pairs:  # 400 draws: +-0.03 around 95% for the paired one
        assert 0.91 <= paired[name] / draws <= 0.99, (name, paired[name] / draws)
    assert pooled["quiet"] / draws > 0.99 and pooled["noisy"] / draws < 0.91, pooled


def test_tost_holds_its_size_at_the_margin_and_seeds_needed_gives_the_power_it_promises():
    """At a true difference of exactly the margin (the boundary of 'not equivalent'), TOST shows
    equivalence at most 5% of the time; with the seeds seeds_needed asks for and a true difference of
    0, it shows it about 80% of the time."""
    rng = np.random.default_rng(5)
    margin = 0.5
    spreads = {"a": 0.2, "b": 0.5}
    shown = 0
    needed = []
    for _ in range(DRAWS):
        c = contrasts.seedwise(arms_by_seed(rng, {"a": 85.0 + margin, "b": 85.0}, spreads, seeds=6), {"a": 1, "b": -1},
                               margin)
        shown += c.p_equivalent < 0.05
        needed.append(c.seeds_needed)
    assert shown / DRAWS <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / DRAWS), shown / DRAWS
    # The design's seeds from the true spread of a paired difference (sqrt(0.2^2 + 0.5^2)).
    sd = np.sqrt(spreads["a"] ** 2 + spreads["b"] ** 2)
    seeds = int(contrasts.needed(TTestPower(), margin / sd))
    equal = sum(contrasts.seedwise(arms_by_seed(rng, {"a": 85.0, "b": 85.0}, spreads, seeds), {"a": 1, "b": -1},
                                   margin).p_equivalent < 0.05 for _ in range(DRAWS))
    assert 0.74 <= equal / DRAWS <= 0.92, (seeds, equal / DRAWS)
    assert 3 <= np.median(needed) <= 3 * seeds  # from the observed spread: noisy, but of that order


def test_a_verdict_family_rejects_anything_at_most_five_percent_under_the_null():
    """Five leave-one-out costs, all truly 0, arms of unequal spreads: Holm over the table (what
    contrasts.family does) calls any of them 'it helped' or 'it hurt' in at most 5% of draws; and the
    equivalence family at a margin the truth sits on the edge of calls any 'no effect' at most 5%."""
    rng = np.random.default_rng(13)
    arms = ["best", "n1", "n2", "n3", "n4", "n5"]
    spreads = dict(zip(arms, (0.3, 0.2, 1.0, 2.0, 4.0, 0.5)))
    any_difference = any_equivalent = 0
    for _ in range(DRAWS):
        null = arms_by_seed(rng, dict.fromkeys(arms, 85.0), spreads, seeds=3)
        rows = [contrasts.as_row(contrasts.seedwise(null, {"best": 1.0, arm: -1.0})) for arm in arms[1:]]
        any_difference += contrasts.family(pd.DataFrame(rows))["significant"].any()
        edge = arms_by_seed(rng, {"best": 85.5, **dict.fromkeys(arms[1:], 85.0)}, spreads, seeds=3)
        rows = [contrasts.as_row(contrasts.seedwise(edge, {"best": 1.0, arm: -1.0}, 0.5)) for arm in arms[1:]]
        any_equivalent += (contrasts.family(pd.DataFrame(rows))["p_equivalent_holm"] < 0.05).any()
    limit = 0.05 + 2 * np.sqrt(0.05 * 0.95 / DRAWS)
    assert any_difference / DRAWS <= limit and any_equivalent / DRAWS <= limit, (any_difference, any_equivalent)


def unreplicated_grid(rng, planted: dict, noise: float = 1.0) -> pd.DataFrame:
    """A 3 x 2 x 2 x 2 grid, one trial per arm (an unreplicated screen), main effects `planted`
    (factor -> effect of its last level) plus noise."""
    rows = []
    for a, b, c, d in itertools.product(("none", "simple", "channel"), ("baseline", "holistic"), (False, True),
                                        ("relu", "silu")):
        row = {"attention": a, "recipe": b, "dsconv": c, "activation": d}
        mean = 70.0 + sum(effect for factor, effect in planted.items() if row[factor] == LAST[factor])
        rows.append({**row, "val": mean + rng.normal(0, noise)})
    return pd.DataFrame(rows)


LAST = {"attention": "channel", "recipe": "holistic", "dsconv": True, "activation": "silu"}
GRID = ["attention", "recipe", "dsconv", "activation"]


def test_pooled_higher_interactions_give_an_unreplicated_screen_intervals_that_cover():
    """One trial per arm, no 3- or 4-way interaction: the main effects' intervals from the pooled
    higher-order interactions (5 or more df) cover 93-97% of 1,000 draws."""
    rng = np.random.default_rng(17)
    covered, ff = 0, None
    for _ in range(DRAWS):
        frame = unreplicated_grid(rng, {"recipe": 3.0})
        ff = factorial.fit_factorial(frame, GRID, "val", {"attention": "none", "recipe": "baseline", "dsconv": False,
                                                          "activation": "relu"})
        est = factorial.estimate(ff, factorial.contrast(ff, "recipe", "holistic"))
        covered += est.ci_low <= 3.0 <= est.ci_high
    assert ff.pooled_interactions and ff.df_resid == 9 and "pooled as the error" in ff.describe()
    assert BAND[0] <= covered / DRAWS <= BAND[1], covered / DRAWS


def test_lenth_finds_planted_effects_and_its_simultaneous_margin_holds_under_the_null():
    references = {"attention": "none", "recipe": "baseline", "dsconv": False, "activation": "relu"}
    found = lenth.lenth(unreplicated_grid(np.random.default_rng(1), {"recipe": 6.0, "dsconv": -5.0}, noise=0.5),
                        GRID, "val", references)
    assert found.m == 23 and set(found.table[found.table["active_simultaneous"]]["contrast"]) == {
        "recipe holistic vs baseline", "dsconv True vs False"}
    rng = np.random.default_rng(2)
    draws = 500
    any_active = sum(lenth.lenth(unreplicated_grid(rng, {}), GRID, "val", references).table["active_simultaneous"].any()
                     for _ in range(draws))
    assert any_active / draws <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / draws), any_active / draws
    assert lenth.lenth(unreplicated_grid(rng, {}).iloc[1:], GRID, "val", references) is None  # not a full grid
    assert lenth.lenth(unreplicated_grid(rng, {}, noise=0.0), GRID, "val", references) is None  # no noise at all
