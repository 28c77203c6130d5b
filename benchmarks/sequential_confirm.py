"""The confirm phase's design against known truth, by simulation: its declared questions answered look
by look (study.questions.run_questions, what the driver does), against fixed designs.

Truths: the committed Fashion-MNIST ablation's six confirm arms (results/ablation: each arm's mean test
accuracy and seed-to-seed sd over its seeds: unequal spreads) with their declared questions (the
screen's best against each other arm, the interaction of the 2x2 among them); the same arms all equal
(every difference claim false); every other arm exactly one margin below the best (every equivalence
claim with the best false); one question alone, its two arms equal (no Bonferroni share: the t
conversion's hardest case). Designs: the default sequential one (3 seeds at the
first look, a look per seed up to 12), a fixed 3 and a fixed 12 seeds (one look: Bonferroni t
intervals), and a fixed design with the sequential one's mean seeds an arm.

Printed and written per truth and design: the family-wise error (the share of runs with any false
claim: a difference of the wrong sign or none, an equivalence beyond the margin), the coverage of the
reported intervals (the share of questions whose final interval holds its truth), the mean seeds an
arm, the share of questions settled, and the lean of the settled differences (estimate − truth, signed
toward the estimate's side of 0). docs/ANALYSIS.md holds the table; tests/test_sequential.py
checks the same with fewer runs.

    python benchmarks/sequential_confirm.py [--runs 2000] [--out benchmarks/results/sequential-confirm.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import from the repository root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from study.questions import declare, run_questions  # noqa: E402
from study.selection import arm_label  # noqa: E402
from study.significance import ALPHA, EQUIVALENCE_MARGIN  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FIRST, CAP = 3, 12


def committed_truth(results: Path = REPO / "results" / "ablation") -> tuple[list[dict], list[str], pd.DataFrame]:
    """(the declared questions, the arm labels, each arm's mean and sd) of a committed ablation's
    confirm phase, the truth of the simulations."""
    record = json.loads((results / "sweep.json").read_text())["phases"]["confirm"]
    factors = record["factors"]
    questions = declare(record["arms"], factors, record.get("references"), record.get("margin", EQUIVALENCE_MARGIN))
    labels = [arm_label(arm["levels"], factors) for arm in record["arms"]]
    trials = pd.read_csv(results / "trials.csv")
    confirm = trials[trials["phase"] == "confirm"]
    confirm = confirm.assign(arm=[arm_label(r, factors) for r in confirm[factors].to_dict("records")])
    return questions, labels, confirm.groupby("arm")["test_acc"].agg(["mean", "std"]).loc[labels]


def truths(questions: list[dict], labels: list[str], spread: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Each truth's arm means: as committed, all equal, the others one margin below the best."""
    margin = questions[0]["margin"]
    best = float(spread["mean"].iloc[0])
    return {"committed": spread["mean"].to_dict(), "all equal": {a: best for a in labels},
            "others one margin below": {a: best - (margin if a != labels[0] else 0.0) for a in labels}}


def simulate(questions: list[dict], labels: list[str], means: dict, sds: dict, first: int, cap: int, runs: int,
             seed: int) -> dict[str, float]:
    """Family-wise error, coverage, mean seeds an arm, the share settled, and how far the estimates of
    the questions settled with a difference lean beyond their truth (toward its sign: + overstates),
    over `runs` confirm phases."""
    rng = np.random.default_rng(seed)
    truth = {q["id"]: sum(w * means[a] for a, w in q["weights"].items()) for q in questions}
    wrong = covered = settled = seeds = 0
    lean = []
    for _ in range(runs):
        noise = {a: rng.normal(0.0, sds[a], size=cap) for a in labels}
        answers, tried, _ = run_questions(questions, lambda a, k: means[a] + noise[a][k], labels, first, cap, ALPHA)
        false_claim = False
        for q in questions:
            answer, true = answers[q["id"]], truth[q["id"]]
            covered += answer.low <= true <= answer.high
            settled += answer.state == "settled"
            false_claim |= (answer.outcome == "+" and true <= 0) or (answer.outcome == "-" and true >= 0)
            false_claim |= answer.outcome == "equivalent" and abs(true) >= q["margin"]
            if answer.outcome in ("+", "-") and true != 0:
                lean.append(np.sign(true) * (answer.estimate - true))
        wrong += false_claim
        seeds += sum(tried.values()) / len(tried)
    n = runs * len(questions)
    return {"family-wise error": wrong / runs, "coverage": covered / n, "seeds an arm": seeds / runs,
            "settled": settled / n, "lean of settled differences": float(np.mean(lean)) if lean else float("nan")}


def rounded(result: dict[str, float]) -> dict[str, float | None]:
    """A row's numbers to 3 decimals, None where there is none (no question settled a difference)."""
    return {k: round(v, 3) if np.isfinite(v) else None for k, v in result.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=2000, help="simulated confirm phases per truth and design")
    p.add_argument("--out", help="write the table as JSON here")
    args = p.parse_args(argv)
    questions, labels, spread = committed_truth()
    sds = spread["std"].to_dict()
    rows, start = [], time.time()
    for name, means in truths(questions, labels, spread).items():
        sequential = simulate(questions, labels, means, sds, FIRST, CAP, args.runs, seed=1)
        matched = max(FIRST, round(sequential["seeds an arm"]))
        for design, first, cap, result in (
                (f"sequential: {FIRST}, then one more a look, up to {CAP}", FIRST, CAP, sequential),
                (f"fixed {FIRST}", FIRST, FIRST, None), (f"fixed {CAP}", CAP, CAP, None),
                (f"fixed {matched} (the sequential one's mean seeds)", matched, matched, None)):
            result = result or simulate(questions, labels, means, sds, first, cap, args.runs, seed=1)
            rows.append({"truth": name, "design": design, **rounded(result)})
            print(rows[-1], flush=True)
    # one question alone (the screen's best against one other arm, the two equal): no Bonferroni share
    # hides how close the t conversion of the boundaries is (a random search's --confirm-top 2)
    alone, pair = questions[:1], [a for a, w in questions[0]["weights"].items() if w]
    equal = {a: float(spread["mean"].iloc[0]) for a in pair}
    for design, first, cap in ((f"sequential: {FIRST}, then one more a look, up to {CAP}", FIRST, CAP),
                               (f"fixed {CAP}", CAP, CAP)):
        result = simulate(alone, pair, equal, sds, first, cap, args.runs * 5, seed=2)
        rows.append({"truth": "one question, equal arms", "design": design,
                     **rounded(result)})
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    print(table.to_markdown(index=False))
    print(f"{len(questions)} declared questions, {args.runs} runs per row, {time.time() - start:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps({"runs": args.runs, "questions": [q["id"] for q in questions],
                                              "arms": spread.round(3).reset_index().to_dict("records"),
                                              "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
