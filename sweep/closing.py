"""What the driver prints when a phase ends: its trials' outcomes and, after the last phase, the
answer (the screen's best arm over its fresh seeds and the declared questions' answers; or the screen's best; or the front of a
multi-objective sweep), with where to look next.

The sweep's top floor: the one module of sweep/ that calls into the analysis (analysis.confirm's
estimates) and the export (deploy.latency re-measures a front); nothing else in sweep/ imports them,
and nothing a trial worker loads imports this (tests/test_imports.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

from analysis.confirm import confirmed
from deploy.latency import remeasure_front
from study import learning
from study.best import confirmed_best
from study.cli import shown
from study.front import objective_front
from study.layout import LATENCY_FILE, SCREEN
from study.load import load
from study.states import completed
from sweep.experiment import summarize
from sweep.planning.plan import Plan


def named(plan: Plan, last: bool) -> bool:
    """Whether the console names the phase: a screen that a confirm phase follows, a later rung of the
    screen, or a confirm phase."""
    return bool(plan.phase_dir) and (not last or plan.phase_dir != SCREEN)


def phase_summary(plan: Plan, expected: int, axes: list[str], last: bool) -> int:
    """Print a phase's summary: every trial's outcome; for a sweep without a confirm phase, its best
    trial and arm (as the live table and the report give them); after the last phase, where to look.
    Exit status 130 when interrupted (Ctrl-C: Tune returns what it has), 1 when every trial errored."""
    experiment_dir = shown(plan.experiment_dir)
    try:
        summary = summarize(plan, axes)
        outcomes = [f"{n} {word}" for word, n in summary["outcomes"].items()]
        expected = max(expected, summary["trials"])
        if expected > summary["trials"]:
            outcomes.append(f"{expected - summary['trials']} not started")
            summary["unfinished"] += expected - summary["trials"]
        print(f"\n{plan.phase_dir + ': ' if named(plan, last) else ''}{expected} trials: "
              f"{', '.join(outcomes) or 'none ran'}: {shown(plan.tune_dir)}")
        code = (130 if summary["unfinished"] else
                1 if summary["trials"] and summary["errors"] + summary["timed_out"] == summary["trials"] else 0)
        if last and not plan.confirms:  # no confirm phase: the screen's best is the answer
            for line in summary["best_lines"]:
                print(line)
            line = did_not_learn(experiment_dir)
            if line:
                print(line)
            best = summary.get("best")
            if best and best.get("path"):
                print(f"  reproduce it: python train.py --config {shown(best['path'])}")
            if plan.objectives and not summary["unfinished"]:
                print_front(experiment_dir, plan.objectives)
        if last and plan.confirms and not summary["unfinished"]:  # the confirm phase, ended
            print_confirmed(experiment_dir)
        if last or code:
            print(f"monitor: {summary['tensorboard']}\nanalyse: python -m analysis.report {experiment_dir}")
    except KeyboardInterrupt:  # Tune's own handler is gone once fit() returns
        print(f"run.py: interrupted while summarising; every result is saved: python -m analysis.report "
              f"{experiment_dir}", file=sys.stderr)
        return 130
    if summary["errors"]:
        print(f"{summary['errors']} trial(s) errored (see error.txt in their directories); retry them "
              f"(from their last checkpoint, if any) with: python sweep/run.py --resume {experiment_dir} --max-failures 1", file=sys.stderr)
    if summary["timed_out"]:
        print(f"{summary['timed_out']} trial(s) timed out (no epoch within --trial-timeout {plan.trial_timeout or 0:g} s): "
              f"run them again (from their last checkpoint, if any) with: python sweep/run.py --resume {experiment_dir} "
              "--max-failures 1, and a longer --trial-timeout if they were only slow", file=sys.stderr)
    if summary["unfinished"]:
        print(f"interrupted with {summary['unfinished']} trial(s) unfinished; continue with: "
              f"python sweep/run.py --resume {experiment_dir}", file=sys.stderr)
    return code


def closing_lines(plan: Plan) -> int:
    """After a sequential confirm phase's last look: its answer (print_confirmed) and where to look."""
    try:
        print_confirmed(plan.experiment_dir)
        print(f"monitor: tensorboard --logdir {shown(plan.experiment_dir)}\n"
              f"analyse: python -m analysis.report {shown(plan.experiment_dir)}")
    except KeyboardInterrupt:
        print(f"run.py: interrupted while summarising; every result is saved: python -m analysis.report "
              f"{shown(plan.experiment_dir)}", file=sys.stderr)
        return 130
    return 0


def did_not_learn(experiment_dir: str) -> str:
    """The screen's arms that did not learn, as the report's "Arms that did not learn" names them (its
    first rung's under successive halving: every arm at one budget); '' when every arm learned."""
    from analysis.report import screen_compared

    if "://" in experiment_dir:  # an object store: its frames are the report's to read
        return ""
    try:
        exp, compared = screen_compared(load(experiment_dir).phase(SCREEN))
    except Exception:  # noqa: BLE001 (a line of the summary must never cost the sweep its exit status)
        return ""
    if compared.at_chance is None or compared.at_chance.empty:
        return ""
    factors = [c for c in compared.at_chance.columns if c not in learning.NUMBERS]
    line = learning.sentence(compared.at_chance, factors, compared.arms, int(compared.at_chance["n"].sum()),
                             "left out of the report's effects")
    return line[0].upper() + line[1:]


def print_confirmed(experiment_dir: str) -> None:
    """After the confirm phase: the screen's best arm with its test accuracy interval over its fresh
    seeds, and every declared question's answer (analysis.confirm)."""
    exp = load(experiment_dir)
    result = confirmed(exp)
    if result is not None:
        trial = confirmed_best(exp)
        reproduce = ([f"  reproduce it: python train.py --config {shown(experiment_dir)}/{trial['trial_dir']}"]
                     if trial is not None else [])
        print("\n".join([result.line, *reproduce, *result.fidelity.lines]))


def print_front(experiment_dir: str, objectives: list[list[str]]) -> None:
    """A finished multi-objective sweep: its models' latency measured alone, then its front."""
    if "://" in experiment_dir:
        print(f"latency not re-measured: {experiment_dir} is not on this machine's disk")
        return
    alone = remeasure_front(Path(experiment_dir), objectives)
    frame = objective_front(completed(load(experiment_dir).trials)[0], objectives, alone)
    on = frame[frame["pareto"]]
    names = ", ".join(f"{m} ({d})" for m, d in frame.attrs["objectives"])
    print(f"latency of {alone['which']} measured alone ({alone['threads']} thread, median of "
          f"{alone['repeats']}): {experiment_dir}/{LATENCY_FILE}")
    print(f"front of {names}: {len(on)} of the {len(frame)} trials that ran to their end: "
          f"{', '.join(on['trial_id'])}")
