"""Screen, then confirm: the confirm phase's estimates (the confirmed ranking, the comparisons with
the confirmed best and the leave-one-out table), from the arms study.selection chose (the screen's
ranking, the confirm set: the rules the sweep's driver applied) and study.best's confirmed best.

An *arm* is one combination of the factors' levels; its trials differ only by seed.

**Confirm estimates**: every confirm trial ran to its end under FIFO, each arm with the same fresh
seeds. An arm's mean is the mean over its seeds with a 95% t interval from its own trials (the
seed-to-seed scatter included). A difference of two arms is paired over the seeds both ran, with
its own variance (:mod:`analysis.contrasts`; the one model ``test_acc ~ C(arm) + C(seed)`` of
:mod:`analysis.factorial` gives the pooled figure beside it): the *cost* of removing a component is
mean(best) - mean(neighbour), the comparisons are the confirmed best minus each other arm, each
with its t interval, raw p, Holm-adjusted p over its table (one family) and the equivalence test.

:func:`confirmed` gathers them for an experiment (the report's sections and the driver's console line
use it); :func:`screen_table` is the screen's ranking with why each arm was or was not confirmed.
Their inputs are sweep.json's ``phases.confirm`` (``factors``, ``references``, ``arms``: the arms the
driver chose, the screen's rank 1 first) and the confirm trials that ran to their end (a final report
with a test accuracy); the others (errored, unfinished, never started) are counted, never imputed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
from statsmodels.stats.weightstats import DescrStatsW

from analysis import contrasts, factorial
from analysis.effects import EQUIVALENCE_MARGIN
from analysis.fidelity import Fidelity, fidelity
from analysis.render import interval
from analysis.subdesigns import subdesign_table
from study import learning
from study.best import arm_ranking
from study.layout import chosen_confirm
from study.load import Experiment
from study.selection import arm_label, arm_labels, leave_one_out, reasons, removed, screen_ranking
from study.significance import ALPHA
from study.states import ended

ARM = "arm"


def fit_arms(trials: pd.DataFrame, factors: Sequence[str], best: dict | str,
             metric: str = "test_acc", by_label: bool = False) -> factorial.FactorialFit:
    """The confirm model ``metric ~ C(arm) + C(seed)`` with the best arm (levels, or its label when
    `by_label`) as the reference level."""
    frame = trials.assign(**{ARM: arm_labels(trials, factors)})
    return factorial.fit_factorial(frame, [ARM], metric, {ARM: best if by_label else arm_label(best, factors)})


def arm_means(trials: pd.DataFrame, factors: Sequence[str], metric: str = "test_acc") -> pd.DataFrame:
    """The confirmed ranking. Per arm: n, the mean of `metric` over its seeds with a 95% t interval
    from those trials alone (it includes the seed-to-seed scatter: what a new seed would see), and the
    mean best validation accuracy; ordered by the latter (selection on validation, never on test),
    so row 0 is the confirmed best."""
    rows = []
    for label, group in trials.groupby(arm_labels(trials, factors), sort=False):
        values = group[metric].dropna().to_numpy(float)
        low = high = np.nan
        if len(values) > 1 and values.std() > 0:
            low, high = DescrStatsW(values).tconfint_mean(alpha=ALPHA)
        rows.append({ARM: label, "n": len(values), "mean_best_val": group["best_val_acc"].mean(),
                     "mean": values.mean() if len(values) else np.nan, "ci_low": low, "ci_high": high})
    order = arm_ranking(trials, factors).index  # study.best's rule: the confirmed best first
    return pd.DataFrame(rows).set_index(ARM).loc[order].reset_index()


LOO_COLUMNS = ["removed", "arm", "n", "n_best", "method", "cost", "se", "ci_low", "ci_high", "p", "p_holm", "significant",
               "pooled_ci_low", "pooled_ci_high", "pooled_p_holm", "differs", "p_equivalent_holm", "margin_shown",
               "seeds_needed", "verdict"]
LOO_VERDICTS = dict(zip(contrasts.OUTCOMES, ("it helped", "it hurt", "no effect beyond the margin", "inconclusive")))


def leave_one_out_table(ff: factorial.FactorialFit, best: dict, references: dict, factors: Sequence[str],
                        margin: float = EQUIVALENCE_MARGIN) -> pd.DataFrame:
    """Per leave-one-out neighbour that ran: the cost of removing that component from the best arm,
    mean(best) - mean(neighbour), paired over the seeds both ran (analysis.contrasts; the pooled
    model's figure beside it), with its 95% t interval, p, Holm p over the table, the equivalence test
    at ±`margin` (Holm over the table), the smallest margin shown, the seeds a ±`margin` answer needs,
    and the verdict those tests give."""
    best_label = arm_label(best, factors)
    rows = []
    for arm, factor in leave_one_out(best, references):
        label = arm_label(arm, factors)
        if label not in ff.levels[ARM]:
            continue
        numbers = contrasts.both(ff, {(best_label,): 1.0, (label,): -1.0}, margin)
        rows.append({"removed": removed(best, factor, references), ARM: label, "n_best": ff.counts[ARM][best_label],
                     **numbers, "cost": numbers["effect"], "n": ff.counts[ARM][label]})
    table = contrasts.family(pd.DataFrame(rows, columns=[*LOO_COLUMNS, "effect", "pooled_p", "p_equivalent"]))
    table["verdict"] = [LOO_VERDICTS[contrasts.outcome(row)] for row in table.to_dict("records")]
    return table[LOO_COLUMNS]


COMPARISON_COLUMNS = [ARM, "n", "method", "difference", "ci_low", "ci_high", "p_holm", "p_equivalent_holm",
                      "margin_shown", "seeds_needed", "chance_best", "verdict"]
COMPARISON_VERDICTS = dict(zip(contrasts.OUTCOMES, ("behind the confirmed best", "ahead of the confirmed best",
                                                    "equivalent within the margin", "inconclusive")))
BOOTSTRAP = 2000  # resamples of the seeds for chance_best


def best_comparisons(ff: factorial.FactorialFit, means: pd.DataFrame, margin: float = EQUIVALENCE_MARGIN) -> pd.DataFrame:
    """The confirmed best (row 0 of `means`) against every other confirmed arm: difference of mean
    test accuracy (best - arm) paired over seeds, 95% interval, Holm p, TOST at ±`margin` (Holm), the
    smallest margin shown, the seeds a ±`margin` answer needs, and chance_best (every arm, the best's row
    included): the share of BOOTSTRAP resamples of the seeds (whole seeds, every arm together) in which
    the arm has the highest mean test accuracy."""
    best = means.iloc[0][ARM]
    share = chance_best(ff)
    rows = [{ARM: best, "n": ff.counts[ARM].get(best, 0), "chance_best": share.get(best, np.nan),
             "verdict": "the confirmed best"}]
    for label in means[ARM].iloc[1:]:
        numbers = contrasts.both(ff, {(best,): 1.0, (label,): -1.0}, margin)
        rows.append({ARM: label, **numbers, "difference": numbers["effect"], "n": ff.counts[ARM].get(label, 0),
                     "chance_best": share.get(label, np.nan)})
    table = pd.DataFrame(rows, columns=[*COMPARISON_COLUMNS, "effect", "p", "pooled_p", "p_equivalent"])
    others = contrasts.family(table.iloc[1:].copy())
    others["verdict"] = [COMPARISON_VERDICTS[contrasts.outcome(row)] for row in others.to_dict("records")]
    return pd.concat([table.iloc[:1], others])[COMPARISON_COLUMNS].reset_index(drop=True)


def chance_best(ff: factorial.FactorialFit, resamples: int = BOOTSTRAP, seed: int = 0) -> dict[str, float]:
    """Per arm, the share of bootstrap resamples of the seeds (rows drawn with replacement, every arm
    of a seed together, so the seed offsets stay paired) in which its mean test accuracy is the
    highest (ties split); a simple measure of how sure "the best" is, not a posterior. Only the seeds
    every arm ran are drawn (an arm missing a seed would otherwise be averaged over other seeds);
    none with fewer than two."""
    table, _, ids = ff.by_seed
    values = table.dropna().to_numpy(float)
    if len(values) < 2:
        return {}
    rng = np.random.default_rng(seed)
    wins = np.zeros(values.shape[1])
    for rows in rng.integers(0, len(values), size=(resamples, len(values))):
        mean = values[rows].mean(axis=0)
        top = np.flatnonzero(mean == mean.max())
        wins[top] += 1 / len(top)
    labels = {i: c[0] for c, i in ids.items()}
    return {labels[column]: float(w / resamples) for column, w in zip(table.columns, wins)}


def summary_line(best: dict, factors: Sequence[str], means: pd.DataFrame, loo: pd.DataFrame,
                 references: dict | None, comparisons: pd.DataFrame | None = None) -> str:
    """The console's closing lines (summary_lines), indented by depth and joined by newlines."""
    return as_console(summary_lines(best, factors, means, loo, references, comparisons))


def as_console(lines: Sequence[tuple[int, str]]) -> str:
    return "\n".join("  " * depth + text for depth, text in lines)


def summary_lines(best: dict, factors: Sequence[str], means: pd.DataFrame, loo: pd.DataFrame,
                  references: dict | None, comparisons: pd.DataFrame | None = None) -> list[tuple[int, str]]:
    """(depth, text) of each closing line: the confirmed best arm (by validation, among K) with its
    test accuracy, interval and bootstrap chance of being the best; the screen's best if that
    differs; then one line per component removed from the screen's best: the test accuracy points it
    costs (+: the component helped), 95% interval and verdict."""
    def described(row: pd.Series) -> str:
        return (f"{row[ARM]}: test accuracy {row['mean']:.2f}%{interval(row)} (mean of n={int(row['n'])} seeds, "
                "95% t interval)")

    text = f"confirmed best arm {described(means.iloc[0])}, picked on validation among {len(means)} confirmed arms"
    if "at_chance" in means and means["at_chance"].all():
        text = f"no confirmed arm learned (every one at chance: study.learning); {text}"
    elif "at_chance" in means and means["at_chance"].any():
        text += f" ({int(means['at_chance'].sum())} of them did not learn: at chance)"
    chance = None if comparisons is None or comparisons.empty else comparisons.iloc[0]["chance_best"]
    if chance is not None and not np.isnan(chance):
        text += f"; best by test in {chance:.0%} of bootstrap resamples of the seeds"
    lines = [(0, text)]
    screen_best = arm_label(best, factors)
    if screen_best not in set(means[ARM]):
        lines.append((1, f"the screen's best, {screen_best}, has no confirm trial that ran to its end"))
    elif means.iloc[0][ARM] != screen_best:
        lines.append((1, f"the screen's best, {described(means[means[ARM] == screen_best].iloc[0])}"))
    if len(loo):
        lines.append((1, "removing one component from the screen's best: test accuracy points lost (+: it helped), "
                         "95% interval paired over seeds, verdict from Holm-adjusted tests:"))
        short = {arm_label(arm, factors): removed(best, f, references) for arm, f in leave_one_out(best, references or {})}
        lines += [(2, f"{short[r[ARM]]}: {r['cost']:+.2f} points{interval(r)}, {r['verdict']}")
                  for r in loo.to_dict("records")]
    return lines


@dataclass(frozen=True)
class Confirmed:
    """The confirm phase's numbers (module docstring), from its trials that ran to their end."""
    factors: list[str]
    best: dict[str, Any]  # the screen's best arm (its rank 1): the arm the leave-one-out starts from
    means: pd.DataFrame  # arm_means, with `why` the arm was confirmed; row 0 the confirmed best
    comparisons: pd.DataFrame  # best_comparisons: the confirmed best against every other arm, chance_best
    subdesigns: pd.DataFrame  # analysis.subdesigns.subdesign_table: full 2x2s among the confirm arms
    loo: pd.DataFrame  # leave_one_out_table; no rows without references or neighbours (loo_note says why)
    loo_note: str  # the model fitted (factorial.FactorialFit.describe), or why there is no table
    n: int  # confirm trials used
    excluded: dict[str, int]  # stop_reason -> confirm trials left out (no final report with a test accuracy)
    never_started: int  # confirm trials the driver expected that Ray has no record of
    lines: list[tuple[int, str]]  # summary_lines: (depth, text) of what the console prints after the confirm phase
    fidelity: Fidelity  # how well the screen ranked the confirmed arms
    margin: float  # the equivalence margin of the tests (points)

    @property
    def line(self) -> str:
        """The console's form of `lines` (summary_line)."""
        return as_console(self.lines)

    @property
    def note(self) -> str:
        """'n = 17 confirm trials that ran to their end; left out: 1 errored'."""
        left = [f"{n} {reason}" for reason, n in self.excluded.items()]
        left += [f"{self.never_started} never started"] if self.never_started else []
        return (f"n = {self.n} confirm trial{'s' if self.n != 1 else ''} that ran to their end"
                + (f"; left out: {', '.join(left)}" if left else "; none left out"))


def screen_table(exp: Experiment) -> pd.DataFrame | None:
    """The screen's ranking of arms (:func:`screen_ranking`, validation accuracy only) with
    ``chosen``: why the confirm phase runs the arm, '' when it does not; None before the screen
    chose its arms."""
    spec = chosen_confirm(exp.sweep)
    screen = exp.phase("screen")
    if spec is None or screen.epochs.empty:
        return None
    factors = spec["factors"]
    ranking = screen_ranking(screen.trials, screen.epochs, factors)
    return ranking.assign(chosen=arm_labels(ranking, factors).map(reasons(spec, factors)).fillna(""))


def confirmed(exp: Experiment, margin: float = EQUIVALENCE_MARGIN) -> Confirmed | None:
    """The confirmed ranking, the comparisons with the confirmed best, the sub-designs, the
    leave-one-out table (grid screens: references recorded) and the console's line, from the confirm
    trials that ran to their end, equivalence tested at ±`margin` points; None when none has yet."""
    spec = chosen_confirm(exp.sweep)
    if spec is None:
        return None
    factors, best = spec["factors"], spec["arms"][0]["levels"]
    view = exp.phase("confirm")
    trials = view.trials
    ran = ended(trials, "test_acc")
    used = trials[ran].assign(test_acc=pd.to_numeric(trials["test_acc"][ran]))
    if used.empty:
        return None
    means = arm_means(used, factors)
    means["why"] = means[ARM].map(reasons(spec, factors)).fillna("")
    at_chance = set(arm_labels(learning.arms_at_chance(used, factors), factors))
    if at_chance:  # a column only where some arm did not learn (study.learning)
        means["at_chance"] = means[ARM].isin(at_chance)
    ff = fit_arms(used, factors, means.iloc[0][ARM], by_label=True)
    comparisons = best_comparisons(ff, means, margin)
    subdesigns = subdesign_table(ff, used[list(factors)].drop_duplicates(), lambda levels: arm_label(levels, factors),
                                 spec.get("references") or {}, margin)
    loo, loo_note = leave_one_out_costs(ff, used, factors, best, spec.get("references"), margin)
    excluded = {str(k): int(v) for k, v in trials[~ran]["stop_reason"].value_counts(sort=False).items()}
    screen = exp.phase("screen")
    ranking = screen_ranking(screen.trials, screen.epochs, factors) if len(screen.epochs) else None
    ranks = (pd.Series(ranking["rank"].to_numpy(), index=arm_labels(ranking, factors)) if ranking is not None
             else pd.Series(dtype=float))  # a screen without epochs (its frames lost) ranked nothing
    return Confirmed(list(factors), best, means, comparisons,
                     subdesigns, loo, loo_note,
                     len(used), excluded, view.never_started,
                     summary_lines(best, factors, means, loo, spec.get("references"), comparisons),
                     fidelity(ranks, means.set_index(ARM)["mean"]), margin)


def leave_one_out_costs(ff: factorial.FactorialFit, used: pd.DataFrame, factors: Sequence[str], best: dict,
                        references: dict | None, margin: float = EQUIVALENCE_MARGIN) -> tuple[pd.DataFrame, str]:
    """(leave_one_out_table, the model's description) from the confirm model `ff` of the trials
    `used` (:func:`fit_arms`), or (no rows, why not): no references, the best arm at every
    reference, or no trial of it or of a neighbour."""
    empty = pd.DataFrame(columns=LOO_COLUMNS)
    if not references:
        return empty, "no reference levels recorded (a random or Optuna screen): no leave-one-out"
    labels = set(arm_labels(used, factors))
    neighbours = [arm for arm, _ in leave_one_out(best, references) if arm_label(arm, factors) in labels]
    if not leave_one_out(best, references):
        return empty, "the screen's best arm is at every reference level: nothing to leave out"
    if arm_label(best, factors) not in labels or not neighbours:
        return empty, ("no leave-one-out: the screen's best arm or all of its neighbours have no confirm "
                       "trial that ran to its end")
    table = leave_one_out_table(ff, best, references, factors, margin)
    return table, f"{contrasts.describe(table)}; pooled: {ff.describe()}"
