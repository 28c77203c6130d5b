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


LABELS = [selection.arm_label(dict(zip(FACTORS, arm)), FACTORS) for arm in TRUE_MEANS]


def test_the_confirmed_arms_are_in_the_records_order_and_their_intervals_cover_by_simulation():
    rng = np.random.default_rng(11)
    covered, replicates = 0, 200
    for _ in range(replicates):
        means = confirm.arm_means(simulate(rng), FACTORS, LABELS)
        assert list(means["arm"]) == LABELS and set(means["n"]) == {3}
        best = means.iloc[0]
        covered += best["ci_low"] <= TRUE_MEANS[tuple(BEST.values())] <= best["ci_high"]
    assert 0.91 <= covered / replicates <= 0.99  # an arm's mean: its seeds' scatter included, nominal 95%
    missing = confirm.arm_means(simulate(rng).iloc[3:], FACTORS, LABELS)  # the best arm's trials gone
    assert missing.iloc[0]["n"] == 0 and np.isnan(missing.iloc[0]["mean"])


def test_what_it_would_take_points_to_the_answer_the_estimate_points_to():
    """A question left open: the seeds a fixed design would need, for a difference when the estimate
    is beyond the margin, for equivalence (or the cheaper of the two) when it is inside; never the
    seeds of an answer the estimate contradicts; checked against a brute-force power by simulation."""
    from study.questions import Answer

    question = {"kind": "difference", "margin": 0.5}
    beyond = Answer(6, 1.2, 1.0, -0.2, 2.6, 3.0, "cap", "", float("nan"))
    text = confirm.would_take(question, beyond, 1.0, 0.01)
    assert "a difference of +1.20" in text and "equivalence" not in text
    inside = Answer(6, 0.05, 0.2, -0.4, 0.5, 3.0, "cap", "", float("nan"))
    assert "equivalence within +-0.5" in confirm.would_take(question, inside, 0.2, 0.01)
    zero = Answer(6, 0.0, 0.2, -0.4, 0.4, 3.0, "cap", "", float("nan"))
    assert "difference" not in confirm.would_take(question, zero, 0.2, 0.01)
    n = confirm.equivalence_seeds(0.1, 0.4, 0.5, 0.01)
    rng = np.random.default_rng(5)
    from scipy import stats
    shown = 0
    for _ in range(4000):
        d = rng.normal(0.1, 0.4, size=n)
        half = stats.t.isf(0.01, n - 1) * d.std(ddof=1) / np.sqrt(n)
        shown += -0.5 < d.mean() - half and d.mean() + half < 0.5
    assert 0.78 <= shown / 4000 <= 0.88  # its power, 80% by the noncentral-t approximation
    assert confirm.difference_seeds(1.0, 1.0, 0.01) == 16  # statsmodels: d = 1, two-sided 0.01, power 0.8 (15.1)
