"""The report's screen-then-confirm sections: the screen's ranking with why each arm was confirmed, the
confirmed ranking with the screen's fidelity, and the leave-one-out table (the numbers are
:mod:`analysis.confirm`'s and :mod:`analysis.fidelity`'s; what each estimates: docs/ANALYSIS.md).
"""
from __future__ import annotations

import pandas as pd

from analysis import contrasts
from analysis.confirm import ARM, Confirmed, screen_table
from analysis.confirm_plots import confirmed_plot, loo_plot, rank_plot
from analysis.plots import per_class_plot
from analysis.render import Section
from study.layout import CLASS_PREFIX, chosen_confirm
from study.load import Experiment
from study.selection import arm_label, arm_labels
from study.states import ended


def confirm_sections(exp: Experiment, result: Confirmed | None) -> list[Section]:
    """The screen's ranking, the confirmed ranking and the leave-one-out table (analysis.confirm;
    `result`: confirmed(exp))."""
    ranking, spec = screen_table(exp), chosen_confirm(exp.sweep)
    if ranking is None:
        return [Section("Screen ranking", "The screen has not chosen the arms to confirm yet.")]
    factors = spec["factors"]
    ranked = set(arm_labels(ranking, factors))
    missing = "".join(f" Chosen, not in the screen's ranking (no epoch there): {label} ({a.get('why', '')})."
                      for a in spec["arms"] if (label := arm_label(a["levels"], factors)) not in ranked)
    text = RUNG_RANKING_TEXT if "deepest_rung" in ranking else SCREEN_RANKING_TEXT
    out = [Section("Screen ranking", text + missing, "screen_ranking", ranking)]
    status = confirm_status(exp.phase("confirm"))
    if result is None:
        return out + [Section(CONFIRMED_TITLE, status or "No confirm trial has run to its end yet.")]
    table = result.means.rename(columns={"mean": "mean_test_acc"})[
        [ARM, "n", "mean_test_acc", "ci_low", "ci_high", "mean_best_val", "why"]]
    fidelity = " ".join(line[0].upper() + line[1:] + "." for line in result.fidelity.lines)
    view = exp.phase("confirm")
    used = view.trials[ended(view.trials) & view.trials["test_acc"].notna()]
    out.append(Section(CONFIRMED_TITLE, status + CONFIRMED_TEXT.format(note=result.note) + " " + fidelity + " "
                       + FIDELITY_TEXT, "confirmed_ranking", table, confirmed_plot(result, used)))
    ranks = pd.Series(ranking["rank"].to_numpy(), index=arm_labels(ranking, factors))
    if result.means[ARM].isin(ranks.index).sum() >= 2:
        out.append(Section("Screen rank against the confirmed accuracy", RANK_TEXT, "screen_vs_confirm",
                           figure=rank_plot(ranks, result)))
    if any(str(c).startswith(CLASS_PREFIX) for c in used.columns) and len(used):
        out.append(Section("Per-class test accuracy of the confirmed arms", PER_CLASS_TEXT, "per_class",
                           figure=per_class_plot(used, arm_labels(used, factors), "Per-class test accuracy",
                                                 list(result.means[ARM]))))
    if len(result.comparisons) > 1:
        out.append(Section("Against the confirmed best", status + COMPARISONS_TEXT.format(
            margin=result.margin, rows=len(result.comparisons) - 1, k=len(result.comparisons),
            how=contrasts.describe(result.comparisons.iloc[1:])), "best_comparisons", result.comparisons))
    if len(result.subdesigns):
        out.append(Section("Factorial sub-designs among the confirm arms", status + SUBDESIGNS_TEXT.format(
            margin=result.margin, rows=len(result.subdesigns)), "subdesigns", result.subdesigns))
    if spec.get("references"):
        text = (LOO_TEXT.format(rows=len(result.loo), margin=result.margin) + f" Intervals: {result.loo_note}."
                if len(result.loo) else f"No rows: {result.loo_note}.")
        out.append(Section("Leave-one-out from the screen's best arm", status + text, "leave_one_out", result.loo,
                           loo_plot(result) if len(result.loo) else None))
    return out

def confirm_status(view: Experiment) -> str:
    """A bold line when the confirm phase has trials still to run, else ''."""
    done = int(ended(view.trials).sum())
    if not (len(view.unfinished) or view.never_started or "expected_trials" not in view.sweep):
        return ""
    return (f"**The confirm phase is unfinished: {done} of {view.sweep.get('expected_trials', 'its')} trials have "
            "run to their end; the numbers below are from those and will change.** ")

CONFIRMED_TITLE = "Confirmed ranking (fresh seeds, run to the end)"

RANK_TEXT = ("Does the screen's ranking hold? Each confirmed arm's rank in the screen against its mean test "
             "accuracy in the confirm phase (the fidelity above, drawn).")
PER_CLASS_TEXT = ("Where the confirmed arms differ, class by class: the mean test accuracy on each class over the "
                  "arm's confirm trials (rows in the confirmed ranking's order). Descriptive: no test is made per class.")

SCREEN_RANKING_TEXT = ("The screen's picture, validation accuracy only (test accuracy is not read from the "
                       "screen). Per arm: its trials; deepest_epoch, the last epoch any of them reached (how "
                       "long the scheduler kept the arm); mean_best_val, the mean over its trials of their best "
                       "validation accuracy; rank, by deepest_epoch, then mean_best_val (an arm stopped at a "
                       "rung was not compared with the arms past it); chosen: why the confirm phase runs the "
                       "arm (the top arms, the best arm's leave-one-out neighbours, the all-reference arm), "
                       "empty when it does not.")

RUNG_RANKING_TEXT = ("The screen's picture, validation accuracy only (test accuracy is not read from the "
                     "screen), from its rungs of successive halving (each trial trained from scratch with its "
                     "schedule fitted to its rung's budget). Per arm: its trials in the deepest rung it reached "
                     "(deepest_rung, 1 = the first) and their epochs there; mean_val_at_end, the mean over those "
                     "trials of their validation accuracy at the end of their schedule; rank, by deepest_rung, then "
                     "mean_val_at_end (an arm a rung did not promote was not compared with the arms past it); "
                     "chosen: why the confirm phase runs the arm (the top arms, the best arm's leave-one-out "
                     "neighbours, the all-reference arm), empty when it does not.")

CONFIRMED_TEXT = ("Each chosen arm retrained with the same fresh seeds and run to its end (no early stop by a "
                  "scheduler). Estimand: the arm's mean test accuracy (%) over training seeds, of the "
                  "best-validation weights. {note}: errored, unfinished and never-started trials have no test "
                  "accuracy, so they are left out, not imputed. n: the arm's trials used; ci: 95% t interval of the mean "
                  "from the arm's own trials (n − 1 df; it includes the seed-to-seed scatter; none for n = 1 "
                  "or identical values), not adjusted for multiplicity. Rows are ordered by mean_best_val "
                  "(selection on validation, never on test): the first row is the confirmed best; its interval "
                  "comes from the same trials that selected it, so when arms are close it is optimistic (the "
                  "screen's best arm, chosen before the confirm phase ran, is the leave-one-out reference). "
                  "why: why the arm was chosen.")

FIDELITY_TEXT = ("The screen's fidelity is Spearman's rank correlation (scipy.stats.spearmanr) between the screen's "
                 "rank of each confirmed arm and its confirmed mean test accuracy; it judges the arms the screen "
                 "sent on only (an arm it dropped is never seen again), unadjusted p of no association.")

TESTS_TEXT = ("Each difference is paired over the seeds both arms ran (the per-seed differences' one-sample t "
              "interval, statsmodels DescrStatsW; the same as scipy's ttest_rel), so it has its own variance; "
              "Welch's interval where the arms share fewer than two seeds. p_holm: two-sided t test of a difference "
              "of 0, Holm-adjusted over the table's {rows} row(s) (one family). p_equivalent_holm: the two one-sided "
              "tests (TOST, Schuirmann 1987) of a difference within ±{margin:g} points (`--margin`), Holm-adjusted "
              "over the table; margin_shown: the smallest margin these numbers show equivalence within (the far end "
              "of the 90% interval); seeds_needed: the seeds at which TOST at ±{margin:g} has 80% power if the arms "
              "are truly equal, from the observed spread of the paired differences (statsmodels.stats.power). "
              "The verdict follows from the tests at 0.05: a difference shown (p_holm), else equivalence shown "
              "(p_equivalent_holm), else inconclusive.")

COMPARISONS_TEXT = ("The confirmed best (picked on validation among the {k} confirmed arms) against each other "
                    "confirmed arm: difference = best − arm, test accuracy points. " + TESTS_TEXT + " chance_best: the share "
                    "of 2,000 bootstrap resamples of the seeds (whole seeds, every arm together) in which the arm has "
                    "the highest mean test accuracy; the first row's is the chance, by this measure, that the pick "
                    "is the best by test. {how}.")

SUBDESIGNS_TEXT = ("Every full 2×2 found among the confirm arms (two factors, two levels each, all four arms, the "
                   "other factors held at one setting): each factor's effect at both levels of the other, its main "
                   "effect (their mean) and the interaction (their difference), test accuracy points, each "
                   "computed per seed that all four arms ran. " + TESTS_TEXT + " pooled_p_holm: the same contrast "
                   "from the pooled confirm model (one residual variance for every confirm arm), Holm over the "
                   "table; differs: the two disagree on significance. A contrast that is also a leave-one-out cost "
                   "has a larger Holm p here: this table is a larger family.")

LOO_TEXT = ("Cost of removing one component from the screen's best arm (the factor set back to its reference "
            "level, the rest unchanged) = mean(best) − mean(neighbour), test accuracy points; positive: the "
            "component helped. n, n_best: the neighbour's and the best arm's trials. " + TESTS_TEXT
            + " pooled_*: the same cost from one OLS model of every confirm trial, test_acc ~ C(arm) + C(seed) "
            "(one residual variance for every confirm arm), Holm over the table; differs: the two disagree on "
            "significance, so read that row with care.")
