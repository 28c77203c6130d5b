"""The phases after the screen's first rung, planned as plain data: a successive-halving screen's
rungs, and the confirm phase before the screen (what it will be) and after it (its looks, from the
arms chosen out of the screen's results and the questions still open).

The confirm phase (``EXP/confirm``, unless ``--no-confirm``) runs arms to their end under FIFO with
fresh seeds (never a seed the screen used): the screen's ``--confirm-top`` best arms, the
leave-one-out neighbours of its best arm and the all-reference arm (``study.selection.confirm_arms``);
for a random or Optuna search, the top configs only. It runs in *looks* (study.questions): the first
gives every arm ``--confirm-seeds`` seeds, each later one gives the arms of the questions still open
one more seed, up to ``--max-seeds`` an arm. Each look is a Ray Tune experiment of its own
(``EXP/confirm``, then ``EXP/confirm-look-2``, ...) whose trials are one ``points_to_evaluate`` per arm
times a grid of the look's seeds. sweep.json's ``phases.confirm`` holds ``{"dir", "top", "seeds"
(the first look's), "max_seeds", "margin", "alpha", "factors"}`` from the start; ``arms``,
``references``, ``questions`` and the first look once the arms are chosen; each later look when the
one before it has been assessed.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import replace
from typing import Any, Mapping

from study.config import TrainConfig, UserError
from study.layout import CONFIRM, SCREEN, confirm_looks, screen_rungs
from study.significance import ALPHA, EQUIVALENCE_MARGIN
from sweep import vocabulary as vocab
from sweep.planning.plan import Plan

CONFIRM_TOP, CONFIRM_SEEDS, MAX_SEEDS = 3, 3, 12  # defaults of --confirm-top, --confirm-seeds, --max-seeds


def planned(expected: int, confirm: dict[str, Any] | None,
            rungs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """sweep.json's ``phases`` as planned before anything runs: the screen's directory and trial
    count (with its rungs under successive halving), and the confirm phase's settings when one follows."""
    phases: dict[str, Any] = {SCREEN: {"dir": SCREEN, "expected_trials": expected, **({"rungs": rungs} if rungs else {})}}
    if confirm:
        phases[CONFIRM] = confirm
    return phases


# ------------------------------------------------------------------------------------- rungs
def rung_budgets(max_t: int, first: int, eta: float) -> list[int]:
    """Successive halving's budgets in epochs: first, first x eta, first x eta^2, ... while below
    max_t, then max_t (ASHA's rungs, ending where training ends): 3, 9 for 9 epochs and eta 3."""
    budgets, k = [], 0
    while (budget := round(first * eta ** k)) < max_t:
        if budget not in budgets:
            budgets.append(budget)
        k += 1
    return budgets + [max_t]


def planned_rungs(budgets: list[int], expected: int) -> list[dict[str, Any]]:
    """sweep.json's ``phases.screen.rungs`` before the screen runs: the first rung in ``screen/``
    with every trial of the screen, each later rung in ``screen-<budget>ep/``, its arms (and so its
    trials) chosen when the rung before it has ended (``study.selection.promoted_arms``)."""
    return [{"dir": SCREEN if i == 0 else f"{SCREEN}-{budget}ep", "budget": budget,
             **({"expected_trials": expected} if i == 0 else {})} for i, budget in enumerate(budgets)]


def rung_phase(screen: Plan, params: Mapping[str, Any], rungs: list[dict[str, Any]],
               k: int) -> tuple[dict[str, Any], Plan]:
    """(params, plan) of the screen's rung k: the first is the screen itself at its budget; a later
    one runs the arms the rung before it promoted (``rungs[k]["arms"]``), each with the screen's
    seeds, every trial from scratch to the end of its schedule fitted to the rung's budget (FIFO)."""
    rung = rungs[k]
    if k == 0:
        return dict(params), replace(screen, budget=rung["budget"])
    arms = [arm["levels"] for arm in rung["arms"]]
    factors = list(arms[0]) if arms else []
    rung_params = points_params(params, arms, factors, params.get("seed"))
    return rung_params, replace(screen, phase_dir=rung["dir"], search="grid", num_samples=len(arms), points=arms,
                                objectives=None, budget=rung["budget"])


def points_params(params: Mapping[str, Any], arms: list[dict[str, Any]], factors: list[str],
                  seeds: Any) -> dict[str, Any]:
    """The params of a phase that runs given arms (``points_to_evaluate``): the screen's fixed values,
    each factor a choice of the arms' levels, and `seeds` (a grid of seeds, one fixed seed, or None:
    the screen's default)."""
    fixed = {k: v for k, v in params.items() if not isinstance(v, Mapping)}
    axes = {f: {"choice": list({repr(arm[f]): arm[f] for arm in arms}.values())} for f in factors}
    return {**fixed, **axes, **({"seed": seeds} if seeds is not None else {})}


def check_confirm_numbers(args: argparse.Namespace) -> None:
    if args.confirm_top is not None and args.confirm_top < 1:
        raise UserError("--confirm-top must be >= 1")
    if args.confirm_seeds is not None and args.confirm_seeds < 2:
        raise UserError("--confirm-seeds must be >= 2: an arm's interval needs two seeds or more")
    if args.max_seeds is not None and args.max_seeds < (args.confirm_seeds or CONFIRM_SEEDS):
        raise UserError(f"--max-seeds {args.max_seeds} is below the {args.confirm_seeds or CONFIRM_SEEDS} seeds "
                        "every arm runs at the first look (--confirm-seeds)")
    if args.max_seeds is not None and args.max_seeds > MAX_SEEDS_LIMIT:
        raise UserError(f"--max-seeds {args.max_seeds:,} is more than a confirm phase plans (at most {MAX_SEEDS_LIMIT})")
    if args.margin is not None and not 0 < args.margin < 100:
        raise UserError(f"--margin {args.margin:g} must be between 0 and 100 accuracy points")


MAX_SEEDS_LIMIT = 50  # seeds an arm may run at most in a confirm phase: a look per seed, each a Tune run


def confirm_settings(args: argparse.Namespace, space: Mapping[str, Any], params: Mapping[str, Any],
                     objectives: Any) -> dict[str, Any] | None:
    """The confirm phase as planned before the screen: top K, S fresh seeds, the factors; None when
    it does not run (--no-confirm; a space that says `confirm: false` unless a --confirm-* flag asks
    for it; a multi-objective search, which has a front rather than a best arm)."""
    asked = any(getattr(args, flag) is not None for flag in CONFIRM_FLAGS)
    if args.no_confirm:
        if asked:
            raise UserError("--no-confirm runs the screen only: drop --confirm-top/--confirm-seeds/--max-seeds/--margin")
        return None
    if objectives:
        if asked:
            raise UserError("a multi-objective search gives a front, not a best arm: it has no confirm phase "
                            "(drop --confirm-top/--confirm-seeds/--max-seeds/--margin)")
        return None
    if not space.get("confirm", True) and not asked:
        return None
    seeds = args.confirm_seeds or CONFIRM_SEEDS
    cap = args.max_seeds or (seeds + 1 if args.smoke_test else MAX_SEEDS)  # the smoke test: one look more at most
    return new_confirm(params, args.confirm_top or CONFIRM_TOP, seeds, max_seeds=cap, margin=args.margin)


CONFIRM_FLAGS = ("confirm_top", "confirm_seeds", "max_seeds", "margin")  # the confirm phase's own flags


def new_confirm(params: Mapping[str, Any], top: int, seeds: int, name: str = CONFIRM, max_seeds: int | None = None,
                margin: float | None = None) -> dict[str, Any]:
    """A confirm phase as planned: top K arms, `seeds` fresh seeds each at its first look, up to
    `max_seeds` (default: MAX_SEEDS, and never below `seeds`), its questions' equivalence margin."""
    return {"dir": name, "top": top, "seeds": fresh_seeds(params, seeds), "factors": factors_of(params),
            "max_seeds": max(max_seeds or MAX_SEEDS, seeds), "margin": margin or EQUIVALENCE_MARGIN,
            "alpha": ALPHA}


def factors_of(params: Mapping[str, Any]) -> list[str]:
    """A screen's factors: every axis but the seed (an arm is one combination of their levels)."""
    return [k for k, v in params.items() if isinstance(v, Mapping) and k != "seed"]


def seeds_per_arm(params: Mapping[str, Any]) -> int:
    """The trials one arm of the screen runs: its seed grid's length, else 1 (one fixed seed, or the
    searcher's draws)."""
    spec = params.get("seed")
    return len(spec["grid"]) if isinstance(spec, Mapping) and "grid" in spec else 1


def fresh_seeds(params: Mapping[str, Any], n: int) -> list[int]:
    """`n` seeds above every seed the screen can use (its seed axis, fixed seed or the default)."""
    spec = params.get("seed", TrainConfig().seed)
    used = vocab.reachable(spec) if isinstance(spec, Mapping) else [spec]
    start = max(int(s) for s in used) + 1
    return list(range(start, start + n))


def confirm_bound(params: Mapping[str, Any], confirm: Mapping[str, Any], search: str) -> int:
    """Most arms the confirm phase can run: K + one leave-one-out neighbour per factor + the
    all-reference arm (grid screens), K (adaptive searches); never more than the screen's arms."""
    axes = vocab.grid_axes(params)
    factors = confirm["factors"]
    if search == "grid" and all(f in axes for f in factors):
        return min(confirm["top"] + len(factors) + 1, math.prod(len(axes[f]) for f in factors))
    return confirm["top"]


def confirm_phase(screen: Plan, params: Mapping[str, Any], confirm: Mapping[str, Any],
                  look: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], Plan]:
    """(params, plan) of one look of the confirm phase `confirm` (sweep.json's phases.confirm, arms
    chosen; without `look`, all its arms with its first seeds, as recorded before looks): the screen's
    fixed values, each factor a choice of the look's arms' levels, its seeds as a grid; one point per
    arm, every trial to its end (FIFO)."""
    look = look or {"dir": confirm["dir"], "seeds": confirm["seeds"], "arms": range(len(confirm["arms"]))}
    arms = [confirm["arms"][i]["levels"] for i in look["arms"]]
    confirm_params = points_params(params, arms, confirm["factors"], {"grid": list(look["seeds"])})
    plan = replace(screen, phase_dir=look["dir"], search="grid", scheduler="fifo", num_samples=len(arms),
                   points=arms, objectives=None, max_t=vocab.max_epochs(confirm_params, screen.smoke), test_shown=True,
                   budget=0)
    return confirm_params, plan


def first_look(confirm: Mapping[str, Any]) -> dict[str, Any]:
    """The confirm phase's first look, once its arms are chosen: every arm, its first seeds."""
    return {"dir": confirm["dir"], "seeds": list(confirm["seeds"]), "arms": list(range(len(confirm["arms"]))),
            "expected_trials": len(confirm["arms"]) * len(confirm["seeds"]), "cap": confirm["max_seeds"]}


def next_look(confirm: Mapping[str, Any], arms: list[int]) -> dict[str, Any]:
    """The look after the last one recorded: one seed above every seed so far, for `arms` (indices)."""
    looks = confirm["looks"]
    seed = max(s for look in looks for s in look["seeds"]) + 1
    return {"dir": f"{confirm['dir']}-look-{len(looks) + 1}", "seeds": [seed], "arms": arms,
            "expected_trials": len(arms), "cap": confirm["max_seeds"]}


def phase_plans(record: Mapping[str, Any], screen: Plan) -> dict[str, tuple[dict[str, Any], Plan]]:
    """{phase directory: (params, plan)} of the phases sweep.json records and can run now: the screen
    (each of its rungs whose arms are chosen), and the confirm once its arms are chosen."""
    rungs = screen_rungs(record)
    out = {rung["dir"]: rung_phase(screen, record["params"], rungs, k) for k, rung in enumerate(rungs)
           if k == 0 or rung.get("arms")} if rungs else {SCREEN: (dict(record["params"]), screen)}
    confirm = record.get("phases", {}).get(CONFIRM)
    if confirm and confirm.get("arms"):
        for look in confirm_looks(record) or [None]:
            params, plan = confirm_phase(screen, record["params"], confirm, look)
            out[plan.phase_dir] = params, plan
    return out
