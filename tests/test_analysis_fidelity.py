"""analysis.fidelity: how well the screen's ranking predicted the confirm phase's, and where each
schedule stood at ASHA's first rung (on hand-built frames and on the committed real ablation)."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.confirm import confirmed
from analysis.fidelity import FIDELITY_FLOOR, fidelity, schedules_at_rung
from study.load import load

ROOT = Path(__file__).resolve().parent.parent
ARMS = list("abcdef")


def test_a_screen_that_ranks_as_the_confirm_phase_does_scores_one_and_a_reversed_one_minus_one():
    means = pd.Series([90.0, 85.0, 80.0, 70.0, 60.0, 50.0], index=ARMS)
    ranks = pd.Series(range(1, 7), index=ARMS)
    assert fidelity(ranks, means).rho == pytest.approx(1.0) and len(fidelity(ranks, means).lines) == 1
    reversed_ = fidelity(ranks[::-1].set_axis(ARMS), means)
    assert reversed_.rho == pytest.approx(-1.0) and reversed_.n == 6
    assert reversed_.lines[1].startswith("warning: the screen ranked the confirmed arms poorly")
    assert "--confirm-top" in reversed_.lines[1] and str(FIDELITY_FLOOR) in reversed_.lines[1]


def test_arms_without_both_numbers_are_left_out_and_too_few_are_not_measured():
    ranks = pd.Series([1, 2, 3], index=["a", "b", "z"])  # z: ranked, never confirmed
    means = pd.Series([70.0, 60.0, np.nan, 50.0], index=["a", "b", "c", "d"])  # c: no trial ended
    result = fidelity(ranks, means)
    assert result.n == 2 and np.isnan(result.rho) and "not measured (2 confirmed arm(s)" in result.lines[0]
    tied = fidelity(pd.Series([1, 2, 3], index=ARMS[:3]), pd.Series([5.0, 5.0, 5.0], index=ARMS[:3]))
    assert tied.n == 3 and "not measured (tied values" in tied.lines[0]


def test_a_noisy_screen_scores_between_by_simulation():
    """The screen sees each arm's true mean plus noise; its rho falls as the noise grows, on average."""
    rng = np.random.default_rng(4)
    truth = pd.Series(np.linspace(60, 90, 12), index=[f"arm{i}" for i in range(12)])
    def mean_rho(noise):
        rhos = []
        for _ in range(200):
            seen = truth + rng.normal(0, noise, len(truth))
            rhos.append(fidelity(seen.rank(ascending=False), truth + rng.normal(0, 0.5, len(truth))).rho)
        return float(np.mean(rhos))
    quiet, noisy = mean_rho(1.0), mean_rho(20.0)
    assert quiet > 0.95 and 0.1 < noisy < 0.7 and quiet > noisy


def test_schedules_at_the_rung_from_the_lr_each_trial_reported():
    trials = pd.DataFrame({"trial_id": ["t1", "t2", "t3", "t4"], "recipe": ["base", "base", "oc", "oc"],
                           "scheduler": ["none", "none", "onecycle", "onecycle"], "epochs": [9, 9, 9, 9],
                           "lr": [0.05, 0.05, 0.1, 0.2]})
    epochs = pd.DataFrame({"trial_id": ["t1", "t2", "t3", "t4", "t3"], "epoch": [3, 3, 3, 3, 4],
                           "lr": [0.05, 0.05, 0.08, 0.18, 0.01]})
    table = schedules_at_rung(trials, epochs, 3).set_index("recipe")
    assert table.loc["base", "lr_share_median"] == 1.0 and table.loc["base", "trials"] == 2
    assert table.loc["oc", "lr_share_min"] == pytest.approx(0.8) and table.loc["oc", "lr_share_max"] == pytest.approx(0.9)
    assert np.allclose(table["share_done"], 1 / 3) and (table["rung"] == 3).all()


def test_on_the_committed_asha_ablation_onecycle_was_before_its_decay_at_the_rung_and_fidelity_is_read():
    exp = load(ROOT / "results" / "ablation-asha")
    screen = exp.phase("screen")
    rung = exp.sweep["plan"]["grace_period"]
    table = schedules_at_rung(screen.trials, screen.epochs, rung).set_index("recipe")
    assert table.loc["baseline", "lr_share_median"] == 1.0  # a constant rate
    assert 0.5 < table.loc["holistic", "lr_share_median"] < 1.0  # OneCycle, past its peak, far from its end
    assert table["trials"].sum() == len(screen.trials)
    result = confirmed(exp)
    assert result.fidelity.n == len(result.means) and -1 <= result.fidelity.rho <= 1
