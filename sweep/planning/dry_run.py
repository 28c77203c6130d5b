"""--dry-run: what a planned sweep would run, the data it reads, its cost in trial-epochs and its wall
time on this machine (sweep.estimate), with cheaper first runs when that is long; nothing runs.
"""
from __future__ import annotations

import argparse
from typing import Any, Callable

from study.cli import duration
from study.config import UserError
from study.layout import CONFIRM
from study.questions import simulated_trials
from study.selection import rung_keeps
from sweep import vocabulary as vocab
from sweep.planning.phases import confirm_bound, seeds_per_arm
from sweep.planning.plan import Plan
from sweep.planning.screen import plan_sweep


def print_dry_run(params: dict[str, Any], plan: Plan, record: dict[str, Any],
                  args: argparse.Namespace | None = None,
                  parse: Callable[[list[str]], argparse.Namespace] | None = None) -> None:
    """What would run: the trials and their configs, the data and where it comes from, the cost and
    the wall time on this machine (sweep.estimate), with cheaper commands when that is long."""
    import pandas as pd

    from training.datasets import data_source

    fixed = {k: v for k, v in params.items() if not isinstance(v, dict)}
    axes = {k: v for k, v in params.items() if isinstance(v, dict)}
    trials = record["expected_trials"]
    confirm = record["phases"].get(CONFIRM)
    print(f"space {record['space_name']}: {trials} trials{' (the screen)' if confirm else ''}, {plan.search} search, "
          f"{plan.scheduler} scheduler, at most {plan.max_t} epoch{'s' if plan.max_t != 1 else ''} each")
    for dataset, size in record["datasets"]:
        print(f"data: {dataset} at {size}x{size}, {data_source(dataset, params['data_dir'])}")
    stops = " (the scheduler stops weak trials early: usually far fewer)" if plan.scheduler != "fifo" else ""
    if confirm:
        arms = confirm_bound(params, confirm, plan.search)
        seeds, cap = len(confirm["seeds"]), confirm["max_seeds"]
        what = (f"top {confirm['top']} + the best arm's leave-one-out neighbours (at most one per factor) + the "
                "all-reference arm" if plan.search == "grid" else f"the top {confirm['top']} configs")
        print(f"then confirm: at most {arms} arms ({what}), chosen when the screen ends, each to its end (fifo): "
              f"{seeds} fresh seeds {confirm['seeds']} an arm at the first look, then one more seed per look for the "
              f"arms of the declared questions still open, up to {cap}: {arms * seeds} to at most {arms * cap} trials")
        if cap > seeds and arms > 1:
            same, apart = (simulated_trials(arms, seeds, cap, confirm["margin"], confirm["alpha"], shift)
                           for shift in (0, 4))
            print(f"  expected about {same:.0f} trials if no arm differs from the best, {apart:.0f} if each trails it "
                  f"by 4 x the +-{confirm['margin']:g} margin (seed-to-seed sd one margin; the mean of 20 simulated "
                  "confirm phases of this design, asking the best against each other arm: a 2x2 among the arms adds "
                  "an interaction question)")
    screen_cost = trials * plan.max_t
    if plan.scheduler == "halving":
        screen_cost, stops = halving_cost(params, plan, record), ""
    worst = screen_cost + (arms * cap * plan.max_t if confirm else 0)
    print(f"cost: at most {worst} trial-epochs{stops}; {plan.cpus_per_trial:g} CPU"
          + (f" and {plan.gpus_per_trial:g} GPU" if plan.gpus_per_trial else "") + " per trial")
    if args is not None and args.gpus_per_trial is None:  # the sweep chooses the share on a cluster with GPUs
        import torch

        from sweep.packing import sweep_packing

        packed = sweep_packing(params, plan, record)
        if torch.cuda.device_count():
            plan.gpus_per_trial = packed.share
        print(packed.line() if torch.cuda.device_count() else f"no GPU here; on GPUs: {packed.line()[len('GPUs: '):]}")
    from sweep.estimate import LONG_S, estimate_sweep, local_slots

    slots = local_slots(plan.cpus_per_trial, plan.gpus_per_trial, plan.max_concurrent)
    estimate = estimate_sweep(params, plan, record, slots)
    print(estimate.line())
    if estimate.seconds > LONG_S and args is not None:
        for line in cheaper(args, slots, parse):
            print(line)
    if plan.objectives:
        print("objectives: " + ", ".join(f"{m} ({d})" for m, d in plan.objectives)
              + " by Optuna's NSGA-II, every trial to its end")
    print("fixed: " + ", ".join(f"{k}={v}" for k, v in fixed.items()))
    designed = record.get("design")
    if designed:
        print(f"design: a resolution-IV fraction, {designed['arms']} of the grid's {designed['full_arms']} arms "
              f"(two-level axes {', '.join(f'{k} = {v}' for k, v in designed['two_level_axes'].items())}; generators "
              f"{', '.join(designed['generators'])}"
              + (f"; crossed in full with {', '.join(designed['crossed_in_full'])}" if designed["crossed_in_full"] else "")
              + ")")
    if plan.search == "grid":  # each arm once: a grid of many seeds is the same table
        seeds = params.get("seed")
        rows = plan.points or vocab.grid_arms(params)
        why = ("the fraction's run order" if designed else
               f"{plan.scheduler} judges each trial against those that reached its rung before it")
        order = (f", in this order (shuffled by --search-seed {plan.search_seed}: {why})" if plan.points else "")
        if isinstance(seeds, dict) or order:
            print(f"each row runs with {len(seeds['grid']) if isinstance(seeds, dict) else 1} seed(s){order}")
        print(pd.DataFrame(rows).to_string(index=True) if any(rows) else "(one arm)")
    else:
        print(f"{plan.num_samples} draw(s) by {plan.search} from:")
        print(pd.DataFrame([{"key": k, "kind": next(iter(v)), "values": next(iter(v.values()))}
                            for k, v in axes.items()]).to_string(index=False))


# Cheaper first runs of the same space, suggested when the estimate is long: what each adds to the command.
CHEAPER = (("synthetic data, a few tiny trials", ["--smoke-test"]),
           ("real Fashion-MNIST, small", ["--dataset", "fashion-mnist", "--set", "subset=2000", "width=0.25",
                                          "batch_size=64", "--epochs", "3"]))


def cheaper(args: argparse.Namespace, slots: int,
            parse: Callable[[list[str]], argparse.Namespace] | None) -> list[str]:
    """The CHEAPER commands that this space can run (`parse`: sweep/run.py's flags), each with its own
    estimate on this machine."""
    from sweep.estimate import estimate_sweep

    if parse is None:
        return []
    space = args.space
    lines = []
    for what, extra in CHEAPER:
        try:
            cheap = parse(["--space", space, *extra])
            params, plan, record, _ = plan_sweep(cheap)
            seconds = estimate_sweep(params, plan, record, slots).seconds
        except (UserError, SystemExit):
            continue
        lines.append(f"  cheaper: python sweep/run.py --space {space} {' '.join(extra)}   ({what}: ~{duration(seconds)})")
    return ["too long for a first run? these finish sooner here:", *lines] if lines else []


def halving_cost(params: dict[str, Any], plan: Plan, record: dict[str, Any]) -> int:
    """Print a successive-halving screen's rungs (arms x seeds x budget each) and return its
    trial-epochs (at most: a trial that stops on its own patience costs less)."""
    rungs = record["phases"]["screen"]["rungs"]
    per_arm = seeds_per_arm(params)
    arms = record["expected_trials"] // per_arm
    parts, total = [], 0
    for k, rung in enumerate(rungs):
        arms = arms if k == 0 else rung_keeps(arms, plan.reduction_factor)
        total += arms * per_arm * rung["budget"]
        parts.append(f"rung {k + 1}: {arms} arm(s) x {per_arm} seed(s) x {rung['budget']} epochs")
    print(f"screen by successive halving (eta {plan.reduction_factor:g}), every rung's trials from scratch with "
          f"their schedules fitted to its budget: {'; '.join(parts)} = {total} trial-epochs")
    return total
