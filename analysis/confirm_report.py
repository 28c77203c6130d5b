"""The report's screen-then-confirm sections: the screen's ranking with why each arm was confirmed, the
confirmed ranking with the screen's fidelity, and the leave-one-out table (the numbers are
:mod:`analysis.confirm`'s and :mod:`analysis.fidelity`'s; what each estimates: docs/ANALYSIS.md).
"""
from __future__ import annotations

from analysis.confirm import ARM, Confirmed, arm_label, arm_labels, confirm_record, screen_table
from analysis.load import Experiment, ended
from analysis.render import Section


def confirm_sections(exp: Experiment, result: Confirmed | None) -> list[Section]:
    """The screen's ranking, the confirmed ranking and the leave-one-out table (analysis.confirm;
    `result`: confirmed(exp))."""
    ranking, spec = screen_table(exp), confirm_record(exp)
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
    out.append(Section(CONFIRMED_TITLE, status + CONFIRMED_TEXT.format(note=result.note) + " " + fidelity + " "
                       + FIDELITY_TEXT, "confirmed_ranking", table))
    if spec.get("references"):
        text = (LOO_TEXT.format(rows=len(result.loo)) + f" Model: {result.loo_note}." if len(result.loo)
                else f"No rows: {result.loo_note}.")
        out.append(Section("Leave-one-out from the screen's best arm", status + text, "leave_one_out", result.loo))
    return out

def confirm_status(view: Experiment) -> str:
    """A bold line when the confirm phase has trials still to run, else ''."""
    done = int(ended(view.trials).sum())
    if not (len(view.unfinished) or view.never_started or "expected_trials" not in view.sweep):
        return ""
    return (f"**The confirm phase is unfinished: {done} of {view.sweep.get('expected_trials', 'its')} trials have "
            "run to their end; the numbers below are from those and will change.** ")

CONFIRMED_TITLE = "Confirmed ranking (fresh seeds, run to the end)"

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

LOO_TEXT = ("Cost of removing one component from the screen's best arm (the factor set back to its "
            "reference level, the rest unchanged) = EMM(best) − EMM(neighbour) from one OLS model of the "
            "confirm trials, test_acc ~ C(arm) + C(seed): the seed is a block, so the difference is paired by "
            "seed; positive: the component helped. n, n_best: the neighbour's and the best arm's trials. "
            "ci: 95% t interval from the model's residual variance (one variance for every confirm arm), not "
            "adjusted; p: two-sided t test of cost = 0; p_holm: Holm-adjusted over the table's {rows} "
            "row(s) (one family); significant only where p_holm < 0.05.")
