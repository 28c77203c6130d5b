"""Screen, then confirm: the screen's ranking of arms, the confirm set, and the confirm phase's
estimates (the confirmed ranking and the leave-one-out table).

An *arm* is one combination of the factors' levels; its trials differ only by seed.

**Screen ranking** (read from the screen phase only, validation accuracy only): arms are ranked
first by how deep the scheduler let them run (the last epoch any of the arm's trials reached: ASHA's
promotions are the screen's verdict, and an arm stopped at a rung has not been compared with the
arms past it at the same epoch), then by the mean over the arm's trials of their best validation
accuracy, then by the first trial's order. Test accuracy is never read from the screen.

**Confirm set**: the `top` best arms of the screen; the *leave-one-out neighbours* of the best arm
(for each factor not at its reference level, the same arm with that factor set back to it); and the
all-reference arm. Each arm once, with why it was chosen.

**Confirm estimates**: every confirm trial ran to its end under FIFO, each arm with the same fresh
seeds. An arm's mean is the mean over its seeds with a 95% t interval from its own trials (the
seed-to-seed scatter included). Differences come from one model, ``test_acc ~ C(arm) + C(seed)``
(OLS, :mod:`analysis.factorial`): the seed is a block, so a difference of two arms is paired by
seed, and the *cost* of removing a component is
``EMM(best) - EMM(neighbour)``, with its t interval, raw p and Holm-adjusted p over the table (one
family), as for the factorial effects.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from statsmodels.stats.weightstats import DescrStatsW

from analysis import factorial

ARM = "arm"


def arm_label(arm: dict, factors: Sequence[str]) -> str:
    """``attention=channel, recipe=holistic``: one arm, in the factors' order."""
    return ", ".join(f"{f}={arm[f]}" for f in factors)


def screen_ranking(trials: pd.DataFrame, epochs: pd.DataFrame, factors: Sequence[str]) -> pd.DataFrame:
    """One row per arm of the screen, best first (module docstring): the factors, ``trials``,
    ``deepest_epoch``, ``mean_best_val`` (mean over its trials of their best val accuracy so far),
    ``rank`` (1 = best)."""
    factors = list(factors)
    best_val = epochs.groupby("trial_id")["val_acc"].max()
    deepest = epochs.groupby("trial_id")["epoch"].max()
    frame = trials[["trial_id", *factors]].assign(best_val=trials["trial_id"].map(best_val),
                                                   deepest=trials["trial_id"].map(deepest),
                                                   order=range(len(trials)))
    frame = frame[frame["best_val"].notna()]
    keys = frame[factors].astype(str).agg("\x1f".join, axis=1)
    arms = (frame.assign(key=keys).groupby("key", sort=False)
            .agg(**{f: (f, "first") for f in factors}, trials=("trial_id", "size"),
                 deepest_epoch=("deepest", "max"), mean_best_val=("best_val", "mean"), order=("order", "min")))
    arms = arms.sort_values(["deepest_epoch", "mean_best_val", "order"], ascending=[False, False, True],
                            kind="stable").reset_index(drop=True)
    arms["rank"] = range(1, len(arms) + 1)
    return arms.drop(columns="order")


def leave_one_out(best: dict, references: dict) -> list[tuple[dict, str]]:
    """The best arm's neighbours: per factor not at its reference, that factor set back to it; with
    the reason (``without attention=channel (-> none)``)."""
    return [({**best, f: ref}, f"without {f}={best[f]} (-> {ref})")
            for f, ref in references.items() if best[f] != ref]


def confirm_set(ranking: pd.DataFrame, factors: Sequence[str], references: dict | None,
                top: int) -> pd.DataFrame:
    """The arms to confirm (module docstring), each once, in order: top arms, leave-one-out
    neighbours of the best, the all-reference arm; column ``why`` lists every reason an arm was
    chosen. Without `references` (a random or Optuna search: no reference levels), the top arms only."""
    chosen: dict[tuple, tuple[dict, list[str]]] = {}

    def add(arm: dict, why: str) -> None:
        key = tuple(str(arm[f]) for f in factors)
        chosen.setdefault(key, (arm, []))[1].append(why)

    top_arms = ranking.head(top)[list(factors)].to_dict("records")
    for i, arm in enumerate(top_arms, 1):
        add(arm, f"screen rank {i}")
    if references and top_arms:
        for arm, why in leave_one_out(top_arms[0], references):
            add(arm, why)
        add({f: references[f] for f in factors}, "all-reference baseline")
    return pd.DataFrame([{**arm, "why": "; ".join(why)} for arm, why in chosen.values()],
                        columns=[*factors, "why"])


def fit_arms(trials: pd.DataFrame, factors: Sequence[str], best: dict,
             metric: str = "test_acc") -> factorial.FactorialFit:
    """The confirm model ``metric ~ C(arm) + C(seed)`` with the best arm as the reference level."""
    frame = trials.assign(**{ARM: trials[list(factors)].to_dict("records")})
    frame[ARM] = [arm_label(a, factors) for a in frame[ARM]]
    return factorial.fit_factorial(frame, [ARM], metric, {ARM: arm_label(best, factors)})


def arm_means(trials: pd.DataFrame, factors: Sequence[str], metric: str = "test_acc") -> pd.DataFrame:
    """The confirmed ranking. Per arm: n, the mean of `metric` over its seeds with a 95% t interval
    from those trials alone (it includes the seed-to-seed scatter: what a new seed would see), and the
    mean best validation accuracy; ordered by the latter (selection on validation, never on test),
    so row 0 is the confirmed best."""
    labels = [arm_label(a, factors) for a in trials[list(factors)].to_dict("records")]
    rows = []
    for label, group in trials.groupby(pd.Series(labels, index=trials.index), sort=False):
        values = group[metric].dropna().to_numpy(float)
        low = high = np.nan
        if len(values) > 1 and values.std() > 0:
            low, high = DescrStatsW(values).tconfint_mean(alpha=factorial.ALPHA)
        rows.append({ARM: label, "n": len(values), "mean_best_val": group["best_val_acc"].mean(),
                     "mean": values.mean() if len(values) else np.nan, "ci_low": low, "ci_high": high})
    return (pd.DataFrame(rows).sort_values("mean_best_val", ascending=False, kind="stable")
            .reset_index(drop=True))


LOO_COLUMNS = ["removed", "arm", "n", "n_best", "cost", "se", "ci_low", "ci_high", "p", "p_holm", "significant"]


def leave_one_out_table(ff: factorial.FactorialFit, best: dict, references: dict,
                        factors: Sequence[str]) -> pd.DataFrame:
    """Per leave-one-out neighbour that ran: the cost of removing that component from the best arm,
    EMM(best) - EMM(neighbour), paired by seed, with its 95% t interval, p and Holm p over the table."""
    best_label = arm_label(best, factors)
    rows = []
    for arm, why in leave_one_out(best, references):
        label = arm_label(arm, factors)
        if label not in ff.levels[ARM]:
            continue
        est = factorial.estimate(ff, -factorial.contrast(ff, ARM, label))
        rows.append({"removed": why, ARM: label, "n": ff.counts[ARM][label], "n_best": ff.counts[ARM][best_label],
                     "cost": est.effect, "se": est.se, "ci_low": est.ci_low, "ci_high": est.ci_high, "p": est.p})
    table = pd.DataFrame(rows, columns=LOO_COLUMNS[:-2])
    table["p_holm"] = factorial.holm(table["p"]) if len(table) else pd.Series(dtype=float)
    table["significant"] = table["p_holm"] < factorial.ALPHA
    return table


def summary_line(best: dict, factors: Sequence[str], means: pd.DataFrame, loo: pd.DataFrame) -> str:
    """One line for the console: the confirmed best arm (by validation) with its test accuracy and
    interval, the screen's best if that differs, and what removing each component of it costs."""
    def described(row: pd.Series) -> str:
        interval = "" if np.isnan(row["ci_low"]) else f" [{row['ci_low']:.2f}, {row['ci_high']:.2f}]"
        return f"{row[ARM]}: test accuracy {row['mean']:.2f}%{interval} (n={int(row['n'])})"

    text = f"confirmed best arm {described(means.iloc[0])}"
    screen_best = arm_label(best, factors)
    if means.iloc[0][ARM] != screen_best:
        text += f"; the screen's best, {described(means[means[ARM] == screen_best].iloc[0])}"
    if len(loo):
        costs = "; ".join(f"{r['removed'].split(' (')[0]} {r['cost']:+.2f}" + ("*" if r["significant"] else "")
                          for r in loo.to_dict("records"))
        text += f"; removing from the screen's best costs: {costs} (* Holm p < 0.05)"
    return text
