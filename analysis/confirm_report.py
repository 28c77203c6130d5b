"""The report's screen-then-confirm sections: the screen's ranking with why each arm was confirmed, the
declared questions with their answers (the confirm phase's one family of claims), its looks, and the
confirmed arms (descriptive) with the screen's fidelity (the numbers are :mod:`analysis.confirm`'s and
:mod:`analysis.fidelity`'s; how each is made: docs/ANALYSIS.md).
"""
from __future__ import annotations

import pandas as pd

from analysis.confirm import ARM, Confirmed, screen_table
from analysis.confirm_plots import confirmed_plot, questions_plot, rank_plot
from analysis.plots import per_class_plot
from analysis.render import Section
from study.layout import CLASS_PREFIX, chosen_confirm
from study.load import Experiment
from study.selection import arm_label, arm_labels
from study.states import ended


def confirm_sections(exp: Experiment, result: Confirmed | None) -> list[Section]:
    """The screen's ranking, the declared questions, the looks and the confirmed arms (analysis.confirm;
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
        return out + [Section(QUESTIONS_TITLE, status or "No confirm trial has run to its end yet.")]
    out.append(Section(QUESTIONS_TITLE, status + QUESTIONS_TEXT.format(design=result.design, margin=result.margin,
                                                                       coverage=1 - result.error),
                       "questions", result.questions, questions_plot(result) if len(result.questions) else None))
    out.append(Section("Looks of the confirm phase", LOOKS_TEXT, "looks", result.looks))
    table = result.means.rename(columns={"mean": "mean_test_acc"})[
        [ARM, "n", "mean_test_acc", "ci_low", "ci_high", "mean_best_val", "why"]]
    fidelity = " ".join(line[0].upper() + line[1:] + "." for line in result.fidelity.lines)
    view = exp.phase("confirm")
    used = view.trials[ended(view.trials) & view.trials["test_acc"].notna()]
    out.append(Section(CONFIRMED_TITLE, status + CONFIRMED_TEXT.format(note=result.note) + " " + fidelity + " "
                       + FIDELITY_TEXT, "confirmed_arms", table, confirmed_plot(result, used)))
    ranks = pd.Series(ranking["rank"].to_numpy(), index=arm_labels(ranking, factors))
    if result.means[ARM].isin(ranks.index).sum() >= 2:
        out.append(Section("Screen rank against the confirmed accuracy", RANK_TEXT, "screen_vs_confirm",
                           figure=rank_plot(ranks, result)))
    if any(str(c).startswith(CLASS_PREFIX) for c in used.columns) and len(used):
        out.append(Section("Per-class test accuracy of the confirmed arms", PER_CLASS_TEXT, "per_class",
                           figure=per_class_plot(used, arm_labels(used, factors), "Per-class test accuracy",
                                                 list(result.means[ARM]))))
    return out


def confirm_status(view: Experiment) -> str:
    """A bold line when the confirm phase has trials still to run, else ''."""
    done = int(ended(view.trials).sum())
    if not (len(view.unfinished) or view.never_started or "expected_trials" not in view.sweep):
        return ""
    return (f"**The confirm phase is unfinished: {done} of {view.sweep.get('expected_trials', 'its')} trials have "
            "run to their end; the numbers below are from those and will change.** ")

QUESTIONS_TITLE = "Declared questions (the confirm phase's claims)"
CONFIRMED_TITLE = "Confirmed arms (fresh seeds, run to the end)"

RANK_TEXT = ("Does the screen's ranking hold? Each confirmed arm's rank in the screen against its mean test "
             "accuracy in the confirm phase (the fidelity above, drawn).")
PER_CLASS_TEXT = ("Where the confirmed arms differ, class by class: the mean test accuracy on each class over the "
                  "arm's confirm trials (rows in the confirmed arms' order). Descriptive: no test is made per class.")

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

CONFIRMED_TEXT = ("Each chosen arm retrained with fresh seeds and run to its end (no early stop by a scheduler). "
                  "Estimand: the arm's mean test accuracy (%) over training seeds, of the best-validation weights. "
                  "{note}: errored, unfinished and never-started trials have no test accuracy, so they are left out, "
                  "not imputed. n: the arm's trials used (the arms of questions that stayed open ran more seeds); "
                  "ci: 95% t interval of the mean from the arm's own trials (n − 1 df; it includes the seed-to-seed "
                  "scatter; none for n = 1 or identical values), not adjusted for multiplicity: descriptive, each arm "
                  "alone; the declared questions above are the claims. The first row is the screen's best arm (chosen "
                  "on the screen's seeds, so these seeds did not select it). why: why the arm was chosen.")

FIDELITY_TEXT = ("The screen's fidelity is Spearman's rank correlation (scipy.stats.spearmanr) between the screen's "
                 "rank of each confirmed arm and its confirmed mean test accuracy; it judges the arms the screen "
                 "sent on only (an arm it dropped is never seen again), unadjusted p of no association.")

QUESTIONS_TEXT = ("What the confirm phase set out to answer, declared in sweep.json before any confirm trial ran, each "
                  "question once: the screen's best arm against each other confirmed arm (estimand: the mean over "
                  "training seeds of the paired difference in test accuracy, best − other, points; roles: why the other "
                  "arm was confirmed: for a leave-one-out neighbour the difference is what removing that component "
                  "costs), and the interaction of every full 2×2 among the confirm arms. {design}. n: the seed pairs "
                  "every arm of the question ran; low, high: its repeated confidence interval at the look it closed at "
                  "(or its last), estimate ± boundary × the pairs' standard error: together the intervals cover every "
                  "truth at every look with probability about {coverage:g} or more, whatever the stopping (the t conversion "
                  "is close, not exact: docs/ANALYSIS.md gives the simulated rates). A question is supported "
                  "(its claim: a difference with its sign; for an interaction, a difference from 0) when its interval "
                  "excludes 0, shown equivalent when it lies inside ±{margin:g} points; closed as futile when its chance "
                  "of settling by the cap fell below 10% (judged from 5 pairs on); closed for errored trials when an arm of it "
                  "has 3 seeds without a test accuracy; open at the cap otherwise. state, look: how and at which "
                  "look it closed; seeds: its arms' seeds; would_take: for a question left unsettled, the seeds a fixed "
                  "one-look design at its share of the level would need, from the pooled spread of every confirm arm, "
                  "for the answer its estimate points to. Every other number in this report (the screen's effects, "
                  "importance, the arms' own intervals) is exploratory. An estimate read at the look its question settled "
                  "leans away from 0 (a question stops when its numbers look large): read the interval, which the "
                  "guarantee covers, rather than the estimate alone.")

LOOKS_TEXT = ("Each look of the confirm phase: its seeds, the arms that trained them (every arm at the first look; "
              "then the arms of the questions still open), its trials, the cap in force, and after it how many "
              "declared questions were settled, closed as futile, closed for errored trials, at the cap and still "
              "open. A cap raised after a look (`--confirm EXP --max-seeds N`) reads the questions again under it "
              "before any seed more runs.")
