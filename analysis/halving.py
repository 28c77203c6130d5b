"""A successive-halving screen, rung by rung: how many arms each rung ran and sent on, and how well
each rung's ranking agreed with the next one's.

Under ``--scheduler halving`` (the default; sweep.planning.phases) every rung trains its arms from
scratch with each trial's schedule fitted to the rung's budget (study.trial.fit_to_budget), so a
rung ranks arms at the end of their own schedules, never mid-schedule. An arm's score in a rung is
the mean over its trials there of their validation accuracy at their last epoch
(study.selection.rung_ranking); the best 1/eta arms go on (study.selection.promoted_arms, the rule
the driver applied). Test accuracy is never read.
"""
from __future__ import annotations

from typing import Any, Sequence

import pandas as pd

from analysis.fidelity import fidelity
from study.selection import arm_labels, rung_ranking
from study.states import ended

RUNG_COLUMNS = ["rung", "budget", "arms", "trials", "ended", "promoted", "best_val_at_end", "spearman_next", "n_next"]


def rung_table(trials: pd.DataFrame, epochs: pd.DataFrame, factors: Sequence[str],
               rungs: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per rung of the screen: its budget (epochs), arms and trials run, trials that ran to
    their end, arms promoted to the next rung, the best arm's validation accuracy at the end of its
    schedule, and Spearman's rank correlation (analysis.fidelity.fidelity, scipy.stats.spearmanr) between
    this rung's scores of the arms it promoted and their scores in the next rung (``n_next`` arms; NaN
    with fewer than 3 or with tied values)."""
    here = [trials[trials["rung"] == k] for k in range(len(rungs))]
    rankings = [rung_ranking(rung_trials, epochs, factors) for rung_trials in here]
    rows = []
    for k, (spec, ranking) in enumerate(zip(rungs, rankings)):
        rho, n = float("nan"), 0
        if k + 1 < len(rungs) and len(rankings[k + 1]):
            # a higher score is a better rank: its negative orders the arms as a rank does (fidelity)
            agreement = fidelity(-score(ranking, factors), score(rankings[k + 1], factors))
            rho, n = agreement.rho, agreement.n
        promoted = len(rungs[k + 1].get("arms", [])) if k + 1 < len(rungs) else 0
        rows.append({"rung": k + 1, "budget": spec["budget"], "arms": len(ranking), "trials": len(here[k]),
                     "ended": int(ended(here[k]).sum()), "promoted": promoted,
                     "best_val_at_end": ranking["mean_val_at_end"].max() if len(ranking) else None,
                     "spearman_next": rho, "n_next": n})
    return pd.DataFrame(rows, columns=RUNG_COLUMNS)


def score(ranking: pd.DataFrame, factors: Sequence[str]) -> pd.Series:
    """A rung ranking's mean_val_at_end indexed by the arm's label."""
    return pd.Series(ranking["mean_val_at_end"].to_numpy(), index=arm_labels(ranking, factors).to_numpy())
