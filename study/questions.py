"""The confirm phase's declared questions, and how each is answered look by look.

Before any confirm trial runs, the driver records what the confirm phase sets out to answer
(sweep.json's ``phases.confirm.questions``), each question once:

- **the best arm against each other confirmed arm**: the mean over training seeds of the paired
  difference in test accuracy (best-validation weights) between the two arms, best minus other.
  *The best* is the screen's rank-1 arm: chosen on the screen's seeds alone, so the fresh confirm
  seeds that answer these questions did not choose it, and its estimates carry no winner's curse
  from that choice.
  The other arm's roles are named: a leave-one-out neighbour (the answer is the cost of that
  component: + means it helped), the all-reference arm, another of the screen's top arms;
- **the interaction of each full 2x2 among the confirm arms** (two factors at two levels each, the
  others held): (a11 - a01) - (a10 - a00), how much one factor's effect changes with the other.

Each question settles when its repeated confidence interval (study.sequential) excludes 0 (a
difference, with its sign) or lies inside +-margin (equivalent); it closes as *futile* when its
chance of settling by the cap is below FUTILE, judged from FUTILITY_PAIRS pairs on (non-binding: the
intervals stay valid whatever stops them), and for *errored* trials when an arm of it has ERRORED
seeds without a test accuracy; else it stays *open* and its arms train one more seed at the next
look, up to the cap. One family: every question's intervals are at level 1 - alpha/m (Bonferroni
over the m declared questions), so the chance of any false claim (a difference that is not there or
has the other sign, an equivalence that does not hold) is about alpha at most over all questions and
all looks ("about": the t conversion of the boundaries is close, not exact; docs/ANALYSIS.md gives
the simulated rates). An estimate read at the look its question settled leans away from 0 (a
question stops when its numbers look large); its interval is what the guarantee is about.

Pure functions of the recorded questions and the confirm trials' test accuracy per arm and seed:
the driver decides each next look with them, the report and the simulation of docs/ANALYSIS.md
(benchmarks/sequential_confirm.py) recompute the same answers.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from study import sequential
from study.selection import arm_label, removed
from study.states import ended

FUTILE = 0.10  # a question whose chance of settling by the cap is below this closes as futile ...
FUTILITY_PAIRS = 5  # ... judged from 5 pairs on (a spread on 4 df; from 3 it closed real effects early)
ERRORED = 3  # a question closes when one of its arms has this many seeds without a test accuracy
STATES = ("open", "settled", "futile", "cap", "errored")  # cap: still open when its arms reached the cap
DIFFERENCE, INTERACTION = "difference", "interaction"


def declare(arms: Sequence[Mapping[str, Any]], factors: Sequence[str], references: Mapping[str, Any] | None,
            margin: float) -> list[dict[str, Any]]:
    """The declared questions of a confirm set (sweep.json's ``phases.confirm.arms``: the screen's
    rank-1 arm first), each once (module docstring): {"id", "kind", "weights" (arm label ->
    weight), "roles", "claim", "margin"}."""
    labels = [arm_label(arm["levels"], factors) for arm in arms]
    best = arms[0]["levels"]
    out = []
    for arm, label in zip(arms[1:], labels[1:]):
        roles = [why.strip() for why in str(arm.get("why", "")).split(";") if why.strip()]
        out.append({"id": f"{labels[0]} vs {label}", "kind": DIFFERENCE, "weights": {labels[0]: 1.0, label: -1.0},
                    "roles": roles, "claim": _claim(best, arm["levels"], label, references, factors), "margin": margin})
    levels = pd.DataFrame([arm["levels"] for arm in arms], columns=list(factors))
    for square in squares(levels, factors, references or {}):
        f, g, (f0, f1), (g0, g1), fixed = (square[k] for k in ("f", "g", "f_levels", "g_levels", "fixed"))

        def cell(a: Any, b: Any) -> str:
            return arm_label({**fixed, f: a, g: b}, factors)

        held = ", ".join(f"{k}={v}" for k, v in fixed.items())
        name = f"interaction {f} {f0}/{f1} x {g} {g0}/{g1}" + (f" at {held}" if held else "")
        out.append({"id": name, "kind": INTERACTION, "roles": [f"({f}={f1} vs {f0}) at {g}={g1} minus at {g}={g0}"],
                    "weights": {cell(f1, g1): 1.0, cell(f0, g1): -1.0, cell(f1, g0): -1.0, cell(f0, g0): 1.0},
                    "claim": f"the effect of {f}={f1} (against {f0}) changes with {g} ({g1} against {g0})",
                    "margin": margin})
    return out


def _claim(best: Mapping[str, Any], other: Mapping[str, Any], label: str, references: Mapping[str, Any] | None,
           factors: Sequence[str]) -> str:
    """What a positive difference claims in words: 'removing activation=silu (-> relu) from the screen's
    best arm costs test accuracy' for a leave-one-out neighbour, else 'the screen's best arm is better
    than <the other>'."""
    differing = [f for f in factors if best[f] != other[f]]
    if references and len(differing) == 1 and other[differing[0]] == references.get(differing[0]):
        what = removed(dict(best), differing[0], dict(references)).removeprefix("without ")
        return f"removing {what} from the screen's best arm costs test accuracy"
    return f"the screen's best arm is better than {label}"


def squares(arms: pd.DataFrame, factors: Sequence[str], references: Mapping[str, Any]) -> list[dict]:
    """Every full 2x2 among `arms` (one row per arm, the factors as columns): per pair of factors and
    setting of the others, each pair of levels of each of the two with all four combinations present.
    Each as {"f", "g", "f_levels", "g_levels", "fixed"}; a pair of levels is ordered reference first
    (else in the arms' order)."""
    found = []
    for f, g in itertools.combinations(factors, 2):
        others = [x for x in factors if x not in (f, g)]
        groups = arms.groupby(others, sort=False, dropna=False) if others else [((), arms)]
        for fixed, group in groups:
            fixed = dict(zip(others, fixed if isinstance(fixed, tuple) else (fixed,)))
            present = set(group[[f, g]].itertuples(index=False, name=None))
            for fl in itertools.combinations(_ordered(group[f], references.get(f)), 2):
                for gl in itertools.combinations(_ordered(group[g], references.get(g)), 2):
                    if all((a, b) in present for a in fl for b in gl):
                        found.append({"f": f, "g": g, "f_levels": fl, "g_levels": gl, "fixed": fixed})
    return found


def _ordered(values: pd.Series, reference: object) -> list:
    levels = list(dict.fromkeys(values))
    return sorted(levels, key=lambda v: v != reference) if reference in levels else levels


@dataclass(frozen=True)
class Answer:
    """One question at one look: its estimate over the seed pairs every arm of it ran, the repeated
    confidence interval, and what it says."""
    n: int  # seeds every arm of the question ran (the pairs)
    estimate: float
    sd: float  # of the per-seed contrast
    low: float
    high: float
    boundary: float  # the t multiplier of the interval (study.sequential.t_boundary)
    state: str  # one of STATES
    outcome: str  # "+" (shown > 0), "-" (shown < 0), "equivalent", or "" (not settled)
    chance: float  # the chance to settle by the cap (open questions; NaN otherwise)

    def record(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in vars(self).items()}


def per_seed(values: pd.DataFrame, weights: Mapping[str, float]) -> pd.Series:
    """The contrast per seed that every weighted arm ran, in seed order: `values` is seeds as rows (in
    the order they ran), arm labels as columns (NaN where a trial is missing or has no result)."""
    arms = [a for a, w in weights.items() if w]
    if any(a not in values for a in arms):
        return pd.Series(dtype=float)
    table = values[arms].to_numpy(float)
    kept = ~np.isnan(table).any(axis=1)
    return pd.Series(table[kept] @ np.array([weights[a] for a in arms], float), index=values.index[kept])


def answer(contrast: pd.Series, pairs: Sequence[int], alpha: float, margin: float, cap: int) -> Answer:
    """The question whose contrast per seed pair is `contrast` (in seed order), at its latest look:
    `pairs` are its pairs at each of its looks so far (the last is now; the first pairs[-1] of
    `contrast` are used), each look's information pairs/cap; at level `alpha` (its share of the
    family's): settled, at the cap, futile or open (module docstring)."""
    n = pairs[-1] if pairs else 0
    x = contrast.to_numpy(float)[:n]
    estimate = float(x.mean()) if n else math.nan
    sd = float(x.std(ddof=1)) if n > 1 else math.nan
    looks = [m / cap for m in pairs if m >= 2]
    if n < 2 or not (sd > 0):  # no spread to estimate (one pair, or every pair the same): nothing shown
        return Answer(n, estimate, sd, -math.inf, math.inf, math.inf, "open", "", math.nan)
    low, high, c = sequential.repeated_interval(estimate, sd, n, looks, alpha)
    if low > 0 or high < 0:
        return Answer(n, estimate, sd, low, high, c, "settled", "+" if low > 0 else "-", math.nan)
    if -margin < low and high < margin:
        return Answer(n, estimate, sd, low, high, c, "settled", "equivalent", math.nan)
    if n >= cap:
        return Answer(n, estimate, sd, low, high, c, "cap", "", math.nan)
    chance = sequential.chance_to_settle(estimate, sd, n, cap, looks, alpha, margin)
    futile = chance < FUTILE and n >= FUTILITY_PAIRS
    return Answer(n, estimate, sd, low, high, c, "futile" if futile else "open", "", chance)


def family_alpha(questions: Sequence[Mapping[str, Any]], alpha: float) -> float:
    """Each question's level: Bonferroni over the declared family."""
    return alpha / max(len(questions), 1)


@dataclass
class Progress:
    """Where the questions stand after each look: per question the pairs at each look it was open
    at (``pairs``), and the answer it closed with (``closed``) under which cap (``caps``)."""
    pairs: dict[str, list[int]]
    closed: dict[str, Answer]
    caps: dict[str, int]

    @classmethod
    def start(cls) -> "Progress":
        return cls({}, {}, {})


def look(questions: Sequence[Mapping[str, Any]], values: pd.DataFrame, tried: Mapping[str, int],
         progress: Progress, alpha: float, cap: int) -> dict[str, Answer]:
    """Every question's answer after a look (and `progress` brought up to it). `values`: test
    accuracy, seeds as rows in the order they ran, arm labels as columns; `tried`: the seeds each arm
    has run (errored ones too). A closed question keeps the answer it closed with; an open one is
    looked at again when it has more pairs than at its last look; one whose arm has tried the cap
    closes at ``cap``, and opens again if a later look raises the cap (sweep/run.py --confirm EXP
    --max-seeds N: its intervals are then those of the new cap at every look)."""
    level = family_alpha(questions, alpha)
    out = {}
    for q in questions:
        closed = progress.closed.get(q["id"])
        if closed is not None and not (closed.state == "cap" and cap > progress.caps[q["id"]]):
            out[q["id"]] = closed
            continue
        progress.closed.pop(q["id"], None)
        contrast = per_seed(values, q["weights"])
        pairs = progress.pairs.setdefault(q["id"], [])
        if len(contrast) > (pairs[-1] if pairs else 0):
            pairs.append(len(contrast))
        result = answer(contrast, pairs, level, q["margin"], cap)
        arms = [a for a, w in q["weights"].items() if w]
        if result.state == "open" and any(tried.get(a, 0) >= cap for a in arms):
            result = Answer(**{**vars(result), "state": "cap", "chance": math.nan})
        elif result.state == "open" and any(tried.get(a, 0) - _results(values, a) >= ERRORED for a in arms):
            result = Answer(**{**vars(result), "state": "errored", "chance": math.nan})
        if result.state != "open":
            progress.closed[q["id"]], progress.caps[q["id"]] = result, cap
        out[q["id"]] = result
    return out


def _results(values: pd.DataFrame, arm: str) -> int:
    """The seeds of `arm` with a test accuracy so far."""
    return int(values[arm].notna().sum()) if arm in values else 0


def next_arms(questions: Sequence[Mapping[str, Any]], answers: Mapping[str, Answer], tried: Mapping[str, int],
              cap: int) -> list[str]:
    """The arms (labels, in the order of `tried`) that train one more seed at the next look: every arm
    of an open question that has tried fewer than `cap` seeds."""
    open_arms = {a for q in questions if answers[q["id"]].state == "open" for a, w in q["weights"].items() if w}
    return [a for a, n in tried.items() if a in open_arms and n < cap]


def run_questions(questions: Sequence[Mapping[str, Any]], draw, arms: Sequence[str], first: int, cap: int,
                  alpha: float) -> tuple[dict[str, Answer], dict[str, int], int]:
    """The whole sequential design on values from `draw(arm, k)` (the test accuracy of an arm's k-th
    seed): `first` seeds for every arm, then one more seed per look for the arms of open questions, up
    to `cap`. Returns (the final answers, seeds per arm, looks). The driver does the same look by look
    with trained arms; the simulation of docs/ANALYSIS.md calls this."""
    values = pd.DataFrame({arm: [draw(arm, k) for k in range(first)] for arm in arms})
    tried = {arm: first for arm in arms}
    progress = Progress.start()
    looks = 0
    while True:
        looks += 1
        answers = look(questions, values, tried, progress, alpha, cap)
        grow = next_arms(questions, answers, tried, cap)
        if not grow:
            return answers, tried, looks
        k = len(values)
        values = pd.concat([values, pd.DataFrame([{arm: (draw(arm, k) if arm in grow else np.nan) for arm in arms}])],
                           ignore_index=True)
        for arm in grow:
            tried[arm] += 1


def questions_of(spec: Mapping[str, Any], margin: float) -> list[dict[str, Any]]:
    """The questions of a confirm phase (sweep.json's ``phases.confirm``, arms chosen): the ones it
    declared; for one recorded before confirm phases declared questions, the ones this rule declares
    from its arms, at `margin`."""
    recorded = spec.get("questions")
    if isinstance(recorded, list) and recorded:
        return recorded
    return declare(spec["arms"], spec["factors"], spec.get("references"), spec.get("margin", margin))


def looks_of(spec: Mapping[str, Any], ran: Sequence[int] = ()) -> list[dict[str, Any]]:
    """The looks of a confirm phase; for one recorded without looks, one look: every arm, its seeds
    (and any other seed its trials `ran`), capped there."""
    if spec.get("looks"):
        return list(spec["looks"])
    seeds = sorted({*map(int, spec["seeds"]), *map(int, ran)})
    return [{"dir": spec["dir"], "seeds": seeds, "arms": list(range(len(spec["arms"]))), "cap": len(seeds)}]


def cap_of(spec: Mapping[str, Any]) -> int:
    """The most seeds an arm of the confirm phase runs: --max-seeds as recorded, else its seeds."""
    return int(spec.get("max_seeds") or len(spec["seeds"]))


def assess_looks(spec: Mapping[str, Any], trials: pd.DataFrame, questions: Sequence[Mapping[str, Any]],
                 alpha: float, pending: bool = False) -> list[dict[str, Answer]]:
    """Every question's answer after each look of a confirm phase, from its trials (one row per trial:
    its factors, ``seed``, ``stop_reason`` and ``test_acc``), recomputed as the driver decided them:
    look k sees the trials of the seeds of looks 1..k, under the cap in force then (each look records
    it); a trial that did not run to its end with a test accuracy is a missing value. With `pending`,
    one more entry: the answers after the last look under the phase's cap now (a raised cap opens
    again the questions closed at the old one)."""
    factors = spec["factors"]
    labels = [arm_label(arm["levels"], factors) for arm in spec["arms"]]
    used = trials[ended(trials, "test_acc")]
    table = (used.assign(arm=[arm_label(r, factors) for r in used[list(factors)].to_dict("records")],
                         test_acc=pd.to_numeric(used["test_acc"]))
             .pivot_table(index="seed", columns="arm", values="test_acc", aggfunc="first")
             if len(used) else pd.DataFrame())
    tried = {label: 0 for label in labels}
    progress, seen, out = Progress.start(), [], []
    for step in looks_of(spec, trials["seed"].dropna().unique() if "seed" in trials else ()):
        for i in step["arms"]:
            tried[labels[i]] += len(step["seeds"])
        seen += [s for s in step["seeds"] if s not in seen]
        values = table.reindex(index=sorted(seen), columns=labels)
        out.append(look(questions, values, tried, progress, alpha, int(step.get("cap", cap_of(spec)))))
    if pending:
        out.append(look(questions, values, tried, progress, alpha, cap_of(spec)))
    return out


def tried_of(spec: Mapping[str, Any]) -> dict[str, int]:
    """Arm label -> the seeds it has run (or runs) in the looks recorded so far, in the arms' order."""
    labels = [arm_label(arm["levels"], spec["factors"]) for arm in spec["arms"]]
    tried = {label: 0 for label in labels}
    for step in looks_of(spec):
        for i in step["arms"]:
            tried[labels[i]] += len(step["seeds"])
    return tried


def verdict(question: Mapping[str, Any], answer: Answer) -> str:
    """What the answer says of the question's claim: 'supported', 'not supported: ...', or
    'inconclusive: ...' (why: open, at the cap, closed as futile)."""
    margin = f"{question['margin']:g}"
    if answer.state == "settled":
        if question["kind"] == INTERACTION:
            return {"+": "supported: positive", "-": "supported: negative"}.get(
                answer.outcome, f"not supported: within +-{margin} points")
        if answer.outcome == "+":
            return "supported" + (f" (and within +-{margin} points)" if answer.high < question["margin"] else "")
        if answer.outcome == "-":
            return "not supported: the other arm is better"
        return f"not supported: equivalent within +-{margin} points"
    why = {"open": "still open", "cap": "open at the cap", "futile": "closed as futile (unlikely to settle by the cap)",
           "errored": f"closed: an arm of it has {ERRORED} or more seeds without a test accuracy (errored trials)"}
    return f"inconclusive: {why[answer.state]}"


def sentence(question: Mapping[str, Any], answer: Answer, look: int | None = None) -> str:
    """One line of a question and its answer: 'A vs B (without activation=silu (-> relu)): +1.38 points
    [0.52, 2.24], n = 8 seeds, repeated interval: supported (settled at look 6)'."""
    roles = f" ({'; '.join(question['roles'])})" if question.get("roles") else ""
    numbers = (f"{answer.estimate:+.2f} points [{answer.low:.2f}, {answer.high:.2f}]"
               if math.isfinite(answer.low) else
               f"{answer.estimate:+.2f} points, no interval yet" if math.isfinite(answer.estimate) else "no pairs yet")
    when = f" at look {look}" if look is not None and answer.state != "open" else ""
    return (f"{question['id']}{roles}: {numbers}, n = {answer.n} seed pair{'s' if answer.n != 1 else ''}: "
            f"{verdict(question, answer)}" + (f" ({answer.state}{when})" if when else ""))


def simulated_trials(arms: int, first: int, cap: int, margin: float, alpha: float, shift: float,
                     runs: int = 20, seed: int = 0) -> float:
    """The mean confirm trials of the design (run_questions) over `runs` simulated confirm phases of
    `arms` arms, the best against each other one, every seed's test accuracy normal with sd one margin,
    each other arm `shift` margins below the best: the dry run's expected cost."""
    return simulated_design(arms, first, cap, margin, alpha, shift, runs, seed)[0]


def simulated_design(arms: int, first: int, cap: int, margin: float, alpha: float, shift: float,
                     runs: int = 20, seed: int = 0) -> tuple[float, float]:
    """(mean trials, mean looks) of :func:`simulated_trials`' simulated confirm phases."""
    rng = np.random.default_rng(seed)
    labels = [f"arm {i}" for i in range(arms)]
    qs = [{"id": f"{labels[0]} vs {a}", "kind": DIFFERENCE, "weights": {labels[0]: 1.0, a: -1.0}, "margin": margin}
          for a in labels[1:]]
    total = looks = 0
    for _ in range(runs):
        noise = rng.normal(0, margin, size=(arms, cap))
        _, tried, ran = run_questions(qs, lambda a, k: (0 if a == labels[0] else -shift * margin) + noise[labels.index(a), k],
                                      labels, first, cap, alpha)
        total, looks = total + sum(tried.values()), looks + ran
    return total / runs, looks / runs
