"""Screen, then confirm: what the confirm phase answered. Its declared questions (study.questions:
the screen's best arm against each other confirmed arm, the interactions of the 2x2s among them),
each with its repeated confidence interval, verdict and the look it settled at; the looks; the
confirmed arms' means (descriptive); and, for a question still open at the cap, what a fixed design
would need to settle it.

An *arm* is one combination of the factors' levels; its trials differ only by seed. *The best* is
the screen's rank-1 arm (chosen on the screen's seeds, never on the confirm seeds that answer its
questions: its estimates carry no winner's curse from choosing it; an estimate read at the look its
question settled still leans away from 0, as any estimate a stopping rule reads).

**Estimates**: every confirm trial ran to its end under FIFO, every arm of a look with the same
fresh seed(s). An arm's mean is the mean over its seeds with a 95% t interval from its own trials (the
seed-to-seed scatter included): descriptive, one arm at a time. A question's contrast is computed
per seed every arm of it ran (paired: a seed fixes the split, data order and augmentation of every
arm) and gets the repeated confidence interval of its look (study.sequential), at the family's level.

:func:`confirmed` gathers them for an experiment (the report's sections and the driver's closing lines
use it); :func:`screen_table` is the screen's ranking with why each arm was or was not confirmed.
Their inputs are sweep.json's ``phases.confirm`` (``factors``, ``references``, ``arms``: the screen's
rank 1 first, ``questions``, ``looks``) and the confirm trials that ran to their end (a final report
with a test accuracy); the others (errored, unfinished, never started) are counted, never imputed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.power import TTestPower
from statsmodels.stats.weightstats import DescrStatsW

from analysis import factorial
from analysis.fidelity import Fidelity, fidelity
from analysis.render import interval
from study import learning, questions
from study.layout import chosen_confirm
from study.load import Experiment
from study.selection import arm_label, arm_labels, reasons, screen_ranking
from study.significance import ALPHA, EQUIVALENCE_MARGIN
from study.states import ended

ARM = "arm"
POWER = 0.8  # of the fixed design "what it would take" sizes


def fit_arms(trials: pd.DataFrame, factors: Sequence[str], best: dict | str,
             metric: str = "test_acc", by_label: bool = False) -> factorial.FactorialFit:
    """The confirm model ``metric ~ C(arm) + C(seed)`` with the best arm (levels, or its label when
    `by_label`) as the reference level: its residual spread is the pooled spread of every arm."""
    frame = trials.assign(**{ARM: arm_labels(trials, factors)})
    return factorial.fit_factorial(frame, [ARM], metric, {ARM: best if by_label else arm_label(best, factors)})


def arm_means(trials: pd.DataFrame, factors: Sequence[str], order: Sequence[str], metric: str = "test_acc") -> pd.DataFrame:
    """The confirmed arms, in `order` (their labels: the best first). Per arm: n, the mean of `metric`
    over its seeds with a 95% t interval from those trials alone (it includes the seed-to-seed scatter:
    what a new seed would see), and the mean best validation accuracy. Descriptive."""
    rows = []
    groups = dict(list(trials.groupby(arm_labels(trials, factors), sort=False)))
    for label in order:
        group = groups.get(label, trials.iloc[:0])
        values = group[metric].dropna().to_numpy(float)
        low = high = np.nan
        if len(values) > 1 and values.std() > 0:
            low, high = DescrStatsW(values).tconfint_mean(alpha=ALPHA)
        rows.append({ARM: label, "n": len(values), "mean_best_val": group["best_val_acc"].mean(),
                     "mean": values.mean() if len(values) else np.nan, "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=[ARM, "n", "mean_best_val", "mean", "ci_low", "ci_high"])


QUESTION_COLUMNS = ["question", "roles", "claim", "n", "estimate", "low", "high", "boundary", "verdict", "state",
                    "look", "seeds", "would_take"]


def question_table(spec: Mapping[str, Any], qs: Sequence[Mapping[str, Any]], looks: list[dict[str, questions.Answer]],
                   trials: pd.DataFrame, sigma: float, alpha: float) -> pd.DataFrame:
    """One row per declared question: its answer after the last look (n: seed pairs; estimate;
    low/high: its repeated confidence interval, boundary: the interval's t multiplier), its verdict,
    state and the look it closed at (or was last looked at), the seeds its arms ran, and for a question
    still unsettled what a fixed design would take (:func:`would_take`)."""
    tried = questions.tried_of(spec)
    level = questions.family_alpha(qs, alpha)
    rows = []
    for q in qs:
        answer = looks[-1][q["id"]]
        at = (len(looks) if answer.state == "open" else  # else the look it closed with this answer at
              next(k + 1 for k, step in enumerate(looks) if step[q["id"]] == answer))
        seeds = "/".join(str(tried.get(a, 0)) for a, w in q["weights"].items() if w)
        sd = sigma * math.sqrt(sum(w * w for w in q["weights"].values()))
        rows.append({"question": q["id"], "roles": "; ".join(q.get("roles", [])), "claim": q.get("claim", ""),
                     "n": answer.n,
                     "estimate": answer.estimate, "low": answer.low, "high": answer.high, "boundary": answer.boundary,
                     "verdict": questions.verdict(q, answer), "state": answer.state, "look": at, "seeds": seeds,
                     "would_take": would_take(q, answer, sd, level) if answer.state != "settled" else ""})
    table = pd.DataFrame(rows, columns=QUESTION_COLUMNS)
    return table.replace([np.inf, -np.inf], np.nan)


def would_take(question: Mapping[str, Any], answer: questions.Answer, sd: float, level: float) -> str:
    """What a fixed design would need to settle a question the confirm phase left unsettled: the seed
    pairs at which a one-look test at the question's share of the family's level (`level`) has POWER
    to give the answer its estimate points to, the spread of its contrast being `sd` (the pooled spread
    of every confirm arm): a difference when the estimate is at least the margin away from 0 (or the
    question is an interaction), equivalence within the margin when it is inside it; both when both
    are consistent with it, whichever needs fewer. Never the seeds for an answer the estimate
    contradicts."""
    estimate, margin = answer.estimate, question["margin"]
    if not (math.isfinite(estimate) and sd > 0):
        return "no estimate yet"
    options = []
    if estimate != 0:  # a difference of the size seen: consistent with any estimate but 0
        n = difference_seeds(abs(estimate), sd, level)
        options.append((n, f"a difference of {estimate:+.2f}"))
    if abs(estimate) < margin and question["kind"] != questions.INTERACTION:
        n = equivalence_seeds(estimate, sd, margin, level)
        options.append((n, f"equivalence within +-{margin:g}"))
    n, what = min(options, key=lambda option: option[0])
    return (f"about {n} seeds (pooled spread {sd:.2f}) to show {what} with {POWER:.0%} power, one look at {level:.2g}"
            if math.isfinite(n) else f"more than {LARGEST:,} seeds to show {what}")


LARGEST = 10_000  # seeds beyond which "what it would take" says only "more than"


def difference_seeds(effect: float, sd: float, level: float) -> float:
    """Pairs for a two-sided paired t test at `level` to show `effect` with POWER (statsmodels)."""
    try:
        n = TTestPower().solve_power(effect_size=effect / sd, alpha=level, power=POWER, alternative="two-sided")
    except (ValueError, RuntimeError):
        return math.inf
    return math.ceil(n) if np.isfinite(n) and n <= LARGEST else math.inf


def equivalence_seeds(estimate: float, sd: float, margin: float, level: float) -> float:
    """Pairs for TOST at +-`margin` (each one-sided test at `level`) to have POWER when the true
    difference is `estimate`: the smallest n with P(both one-sided tests reject) >= POWER, that chance
    from the noncentral t of each (the usual approximation, 1 - beta_low - beta_high)."""
    for n in range(3, LARGEST + 1):
        df, se = n - 1, sd / math.sqrt(n)
        critical = stats.t.isf(level, df)
        power = (stats.nct.sf(critical, df, (margin - estimate) / se) + stats.nct.sf(critical, df, (margin + estimate) / se)
                 - 1)
        if power >= POWER:
            return n
    return math.inf


LOOK_COLUMNS = ["look", "seeds", "arms", "trials", "cap", "settled", "futile", "errored", "at_cap", "open"]


def look_table(spec: Mapping[str, Any], looks: list[dict[str, questions.Answer]]) -> pd.DataFrame:
    """One row per look: its seeds, the arms that trained them, its trials, the cap in force, and after
    it the declared questions settled, closed as futile, closed for errored trials, at the cap and
    still open. A cap raised after the last look (`looks` holds one more entry: the questions read
    again under it, study.questions.assess_looks' pending) is a row of its own with no seeds."""
    rows = []
    steps = questions.looks_of(spec)
    for k, answers in enumerate(looks, 1):
        step = steps[k - 1] if k <= len(steps) else None
        states = [a.state for a in answers.values()]
        row = ({"seeds": ", ".join(map(str, step["seeds"])), "arms": len(step["arms"]),
                "trials": len(step["arms"]) * len(step["seeds"]), "cap": int(step.get("cap", questions.cap_of(spec)))}
               if step is not None else
               {"seeds": "none: the questions read again under the raised cap", "arms": 0, "trials": 0,
                "cap": questions.cap_of(spec)})
        rows.append({"look": k, **row, "settled": states.count("settled"), "futile": states.count("futile"),
                     "errored": states.count("errored"), "at_cap": states.count("cap"), "open": states.count("open")})
    return pd.DataFrame(rows, columns=LOOK_COLUMNS)


def raised(spec: Mapping[str, Any]) -> bool:
    """Whether the confirm phase's cap was raised after its last look (sweep/run.py --confirm EXP
    --max-seeds N) and no look has run under it yet: its questions are then read again under it."""
    steps = questions.looks_of(spec)
    return questions.cap_of(spec) > int(steps[-1].get("cap", questions.cap_of(spec)))


def summary_lines(best: str, means: pd.DataFrame, table: pd.DataFrame, design: str) -> list[tuple[int, str]]:
    """(depth, text) of each closing line: the screen's best arm with its test accuracy and interval;
    the declared questions' design; one line per question with its verdict, n and the look it settled at."""
    row = means[means[ARM] == best]
    if row.empty or not row.iloc[0]["n"]:
        text = f"the screen's best arm, {best}, has no confirm trial that ran to its end"
    else:
        row = row.iloc[0]
        text = (f"the screen's best arm {best}: test accuracy {row['mean']:.2f}%{interval(row)} (mean of "
                f"n={int(row['n'])} fresh seeds, 95% t interval; chosen on the screen's seeds, so the confirm seeds "
                "that measure it did not select it)")
    if "at_chance" in means and means["at_chance"].all():
        text = f"no confirmed arm learned (every one at chance: study.learning); {text}"
    elif "at_chance" in means and means["at_chance"].any():
        text += f" ({int(means['at_chance'].sum())} of the confirmed arms did not learn: at chance)"
    lines = [(0, text), (1, design)]
    for r in table.to_dict("records"):
        numbers = (f"{r['estimate']:+.2f} points [{r['low']:.2f}, {r['high']:.2f}]" if pd.notna(r["low"]) else
                   f"{r['estimate']:+.2f} points, no interval" if pd.notna(r["estimate"]) else "no estimate")
        when = f", look {r['look']}" if r["state"] != "open" else ""
        roles = f" ({r['roles']})" if r["roles"] else ""
        lines.append((2, f"{r['question']}{roles}: {numbers}, n={r['n']}{when}: {r['verdict']}"))
    return lines


def as_console(lines: Sequence[tuple[int, str]]) -> str:
    return "\n".join("  " * depth + text for depth, text in lines)


@dataclass(frozen=True)
class Confirmed:
    """The confirm phase's answers (module docstring), from its trials that ran to their end."""
    factors: list[str]
    best: dict[str, Any]  # the screen's best arm (its rank 1): the arm every question of a difference is about
    means: pd.DataFrame  # arm_means (descriptive), with `why` the arm was confirmed; row 0 the best
    questions: pd.DataFrame  # question_table: every declared question's answer
    looks: pd.DataFrame  # look_table
    design: str  # the family, its level, the boundaries, the cap: one sentence
    n: int  # confirm trials used
    excluded: dict[str, int]  # stop_reason -> confirm trials left out (no final report with a test accuracy)
    never_started: int  # confirm trials the driver expected that Ray has no record of
    lines: list[tuple[int, str]]  # summary_lines: (depth, text) of what the console prints after the confirm phase
    fidelity: Fidelity  # how well the screen ranked the confirmed arms
    margin: float  # the equivalence margin of the declared questions (points)
    error: float  # the chance of any false claim the family allows (error_bound)

    @property
    def line(self) -> str:
        """The console's form of `lines`."""
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


def caps(spec: Mapping[str, Any]) -> list[int]:
    """The caps the confirm phase's questions were read under, first to last (more than one when the
    cap was raised after a reading: sweep/run.py --confirm EXP --max-seeds N)."""
    steps = questions.looks_of(spec)
    return list(dict.fromkeys([*(int(step.get("cap", questions.cap_of(spec))) for step in steps),
                               questions.cap_of(spec)]))


def error_bound(spec: Mapping[str, Any], alpha: float) -> float:
    """The chance of any false claim the family's intervals allow: alpha per cap they were read
    under (a raised cap reads the questions again under a new spending of the whole alpha)."""
    return min(len(caps(spec)) * alpha, 1.0)


def design_sentence(spec: Mapping[str, Any], qs: Sequence[Mapping[str, Any]], alpha: float) -> str:
    """The declared family in one sentence: how many questions, the level, the boundaries, the seeds,
    when they were declared, and what a raised cap costs the error rate."""
    read = caps(spec)
    text = (f"{len(qs)} declared question{'s' if len(qs) != 1 else ''}, one family at {alpha:g} (Bonferroni: each at "
            f"{questions.family_alpha(qs, alpha):.2g}), repeated confidence intervals of Lan-DeMets O'Brien-Fleming "
            f"type converted to t; {len(spec['seeds'])} seeds an arm at the first look, then one more per look for the "
            f"arms of open questions, up to {questions.cap_of(spec)}; equivalence within +-{qs[0]['margin']:g} points"
            if qs else "no declared questions")
    if not spec.get("questions"):
        text += ("; declared by the report from the recorded arms (this confirm phase ran before confirm phases "
                 "declared their questions)")
    elif spec.get("declared_after"):
        text += (f"; declared after its first {spec['declared_after']} seeds had run (this confirm phase ran before "
                 "confirm phases declared their questions; the rule that declares them is the one every confirm phase "
                 "uses, from its recorded arms)")
    if len(read) > 1:
        text += (f"; the cap was raised from {read[0]} to {read[-1]} after the questions had been read at the first "
                 f"cap: counting that reading, the chance of a false claim is at most about "
                 f"{error_bound(spec, alpha):g}, not {alpha:g}")
    return text


def confirmed(exp: Experiment, margin: float = EQUIVALENCE_MARGIN) -> Confirmed | None:
    """The declared questions' answers, the looks, the confirmed arms and the console's lines, from the
    confirm trials that ran to their end; `margin`: the equivalence margin of a confirm phase recorded
    before its questions were (a recorded one keeps its own). None before the confirm arms are chosen
    or before any of their trials has run to its end."""
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
    labels = [arm_label(arm["levels"], factors) for arm in spec["arms"]]
    means = arm_means(used, factors, labels)
    means["why"] = means[ARM].map(reasons(spec, factors)).fillna("")
    at_chance = set(arm_labels(learning.arms_at_chance(used, factors), factors))
    if at_chance:  # a column only where some arm did not learn (study.learning)
        means["at_chance"] = means[ARM].isin(at_chance)
    alpha = spec.get("alpha", ALPHA)
    qs = questions.questions_of(spec, margin)
    looks = questions.assess_looks(spec, trials, qs, alpha, pending=raised(spec))
    ff = fit_arms(used, factors, labels[0], by_label=True)
    sigma = math.sqrt(ff.fit.scale) if ff.has_error_variance else math.nan
    table = question_table(spec, qs, looks, used, sigma, alpha)
    design = design_sentence(spec, qs, alpha)
    excluded = {str(k): int(v) for k, v in trials[~ran]["stop_reason"].value_counts(sort=False).items()}
    screen = exp.phase("screen")
    ranking = screen_ranking(screen.trials, screen.epochs, factors) if len(screen.epochs) else None
    ranks = (pd.Series(ranking["rank"].to_numpy(), index=arm_labels(ranking, factors)) if ranking is not None
             else pd.Series(dtype=float))  # a screen without epochs (its frames lost) ranked nothing
    return Confirmed(list(factors), best, means, table, look_table(spec, looks), design, len(used), excluded,
                     view.never_started, summary_lines(labels[0], means, table, design),
                     fidelity(ranks, means.set_index(ARM)["mean"]), qs[0]["margin"] if qs else margin,
                     error_bound(spec, alpha))
