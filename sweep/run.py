"""Run a CNN ablation study as one Ray Tune experiment:  python sweep/run.py --space ablation

A named space (stages, ablation, hparams, resnet-depth, smoke; see sweep/spaces.py) or a YAML space
file expands into `training.loop.fit` trials under ASHA (or FIFO/HyperBand/median stopping), with
grid, random or Optuna TPE search. The console shows a live table of trials; every trial's
TensorBoard scalars, checkpoints and resolved config land under STORAGE/NAME, and the end prints the
best trial by validation accuracy with its test accuracy. `--resume DIR` continues an interrupted
experiment; `--address` runs on an existing Ray cluster.
"""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import from the repository root, not from sweep/
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from study.cli import Parser, finite_float, run_cli, seconds  # noqa: E402
from study.config import UserError  # noqa: E402
from study.significance import EQUIVALENCE_MARGIN  # noqa: E402
from sweep import vocabulary as vocab  # noqa: E402
from sweep.design import DESIGNS  # noqa: E402
from sweep.planning.dry_run import print_dry_run  # noqa: E402
from sweep.planning.phases import (CONFIRM_FLAGS, CONFIRM_SEEDS, CONFIRM_TOP, MAX_SEEDS,  # noqa: E402
                                   check_confirm_numbers)
from sweep.planning.screen import RESULTS_ENV, plan_sweep  # noqa: E402
from sweep.spaces import SPACES  # noqa: E402
from training.signals import sigterm_as_ctrl_c  # noqa: E402


EXAMPLES = """examples:
  python sweep/run.py --space ablation --dry-run        the plan and its estimated wall time; runs nothing
  python sweep/run.py --space ablation --smoke-test     every code path in under a minute (synthetic data)
  python sweep/run.py --space ablation --dataset fashion-mnist --set subset=2000 width=0.25 batch_size=64 --epochs 3
                                                        a real small ablation, minutes on 2 CPU cores
  python sweep/run.py --space ablation --samples 3      the study: 48 arms x 3 seeds, then a confirm phase
  python sweep/run.py --space my_space.yaml --search optuna --samples 40   your own space file
  python sweep/run.py --resume runs/sweeps/NAME         continue an interrupted experiment
  python sweep/run.py --trust DIR                       sign a copied experiment you trust, so it can be resumed
  python -m analysis.report runs/sweeps/NAME            the report: tables, figures, verdicts"""


def spaces_text() -> str:
    """'spaces and their factors:' then, per named space, its description and its searched axes."""
    import textwrap

    lines = ["spaces and their factors (the searched axes; docs/SWEEPS.md):"]
    for name, space in SPACES.items():
        lines.append(textwrap.fill(f"{name}: {space['description']}", 100, initial_indent="  ",
                                   subsequent_indent="      "))
        axes = [f"{key} {axis_text(value)}" for key, value in space["params"].items() if isinstance(value, dict)]
        lines.append(textwrap.fill("factors: " + ("; ".join(axes) if axes else "none"), 100,
                                   initial_indent="      ", subsequent_indent="        "))
    return "\n".join(lines)


def axis_text(axis: dict[str, Any]) -> str:
    """'none | simple | channel' for a grid or a choice, 'loguniform 1e-3..0.3' for a distribution."""
    (kind, values), = axis.items()
    if kind in ("grid", "choice"):
        return " | ".join(map(str, values))
    return f"{kind} {values[0]:g}..{values[1]:g}"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="run.py", description=__doc__.split("\n\n")[0], epilog=f"{spaces_text()}\n\n{EXAMPLES}",
               formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--space", help=f"named space ({', '.join(SPACES)}) or a YAML/JSON space file")
    what.add_argument("--resume", metavar="EXPERIMENT_DIR",
                      help="continue an interrupted experiment (it unpickles Ray Tune's state, and a pickle can run "
                           "any code: only files your own sweeps signed; refused when they are not, or are another "
                           "user's or writable by every user)")
    what.add_argument("--confirm", metavar="EXPERIMENT_DIR",
                      help="add the confirm phase to a screened experiment, or run it again with other "
                           "--confirm-top/--confirm-seeds (it unpickles Ray Tune's state as --resume does)")
    what.add_argument("--trust", metavar="EXPERIMENT_DIR",
                      help="sign an experiment's Ray Tune files as your own, so that --resume and --confirm "
                           "restore them (one made before sweeps signed their files, or one you received and trust)")
    p.add_argument("--samples", type=int, help="seeds per arm (grid) or trials (random/optuna); "
                                               "default: the space's (1 unless it says)")
    p.add_argument("--epochs", type=int, help="epochs of every trial (overrides presets)")
    p.add_argument("--dataset", help="cifar10 | cifar100 | fashion-mnist | synthetic | imagefolder:PATH")
    p.add_argument("--set", dest="sets", metavar="KEY=VALUE", nargs="+", action="extend", default=[],
                   help="fix any TrainConfig field or bundle for every trial")
    p.add_argument("--search", choices=vocab.SEARCHES, help="default: the space's")
    p.add_argument("--scheduler", choices=vocab.SCHEDULERS,
                   help="default: the space's, else halving (successive halving, each rung trained from scratch "
                        "with its schedule fitted to the rung's budget); asha continues trials from checkpoints")
    p.add_argument("--objectives", metavar="METRIC:MODE,...",
                   help="multi-objective search, e.g. best_val_acc:max,flops:min: Optuna's NSGA-II, every "
                        "trial run to its end (default: the space's, if it names any)")
    p.add_argument("--design", choices=DESIGNS, default="full",
                   help="full: every arm of a grid space; fraction: a resolution-IV fraction of it, every arm "
                        "run to its end in a random order (--search-seed; docs/ANALYSIS.md)")
    p.add_argument("--grace-period", type=int,
                   help="halving/ASHA/median: the first rung's epochs (default: a third of the most epochs, at "
                        "least 2)")
    p.add_argument("--reduction-factor", type=finite_float, default=3,
                   help="halving/ASHA/HyperBand: keep 1/F per rung (default 3)")
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: as resources allow)")
    p.add_argument("--cpus-per-trial", type=finite_float, default=1,
                   help="CPUs Ray reserves per trial, also torch's threads (default 1)")
    p.add_argument("--gpus-per-trial", type=finite_float,
                   help="fractions share a GPU (0.25: four trials per GPU); default 1 if the cluster "
                        "has GPUs, else 0")
    p.add_argument("--max-failures", type=int,
                   help="retries of an errored trial from its checkpoint (default 0; with --resume: "
                        "> 0 also resumes trials that errored before)")
    p.add_argument("--trial-timeout", type=seconds, metavar="DURATION",
                   help="stop a trial that reports no epoch for this long (seconds, or 30m, 2h): a hang in the "
                        "model or data code, a stuck device; it is recorded as timed out, excluded like an "
                        "errored trial, and the sweep goes on (default: none; with --resume: changes the "
                        "experiment's)")
    p.add_argument("--time-budget", type=seconds, metavar="DURATION",
                   help="end the sweep by this long from now (8h, 90m): no trial starts that cannot end in time, "
                        "running ones stop at their last epoch's checkpoint, and --resume continues the rest "
                        "(exit status 75 when work is left; with --resume or --confirm: a budget for that run)")
    p.add_argument("--search-seed", type=int, default=0,
                   help="seed of the random/Optuna searcher and of an ASHA or median-rule grid screen's launch "
                        "order (default 0)")
    p.add_argument("--storage-path",
                   help=f"local directory or URI, e.g. s3://bucket/sweeps "
                        f"(default: ${RESULTS_ENV} or ./runs/sweeps)")
    p.add_argument("--name", help="experiment name (default: SPACE-TIME)")
    p.add_argument("--address",
                   help="Ray cluster: auto | HOST:PORT | ray://HOST:PORT | local (a private one; "
                        "default: a `ray start` cluster on this machine, else local)")
    p.add_argument("--confirm-top", type=int, metavar="K",
                   help=f"confirm the screen's K best arms (default {CONFIRM_TOP}), with the best arm's "
                        "leave-one-out neighbours and the all-reference arm")
    p.add_argument("--confirm-seeds", type=int, metavar="S",
                   help=f"fresh seeds per confirmed arm at the confirm phase's first look, each run to its end "
                        f"(default {CONFIRM_SEEDS})")
    p.add_argument("--max-seeds", type=int, metavar="N",
                   help=f"most seeds a confirmed arm runs: after the first look, the arms of the questions still "
                        f"open train one more seed per look up to N (default {MAX_SEEDS}; N = --confirm-seeds: one "
                        "fixed look). With --confirm DIR alone: continue its confirm phase up to N seeds")
    p.add_argument("--margin", type=finite_float, metavar="POINTS",
                   help=f"accuracy points within which two confirmed arms count as equivalent (the declared "
                        f"questions' equivalence, recorded before they run; default {EQUIVALENCE_MARGIN:g})")
    p.add_argument("--no-confirm", action="store_true",
                   help="the screen only (a full factorial to the end: --scheduler fifo --samples 3 --no-confirm)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the trials the space expands to; run nothing")
    p.add_argument("--smoke-test", action="store_true",
                   help="synthetic data, tiny subset, 2 epochs, a few trials: about a minute on 2 CPU "
                        "cores")
    return p


def check_confirm_flags(args: argparse.Namespace) -> None:
    """--confirm DIR takes its phase's flags only (the screen's come from the experiment's record)."""
    if args.no_confirm:
        raise UserError("--confirm runs the confirm phase; drop --no-confirm")
    check_confirm_numbers(args)
    if args.dry_run:
        raise UserError("--dry-run plans a new sweep; --confirm chooses its arms from the screen's results")


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    from sweep.storage import interrupt_if_stuck

    with sigterm_as_ctrl_c(on_graceful=interrupt_if_stuck) as terminated:
        code = run(args)
    return 143 if terminated and code == 130 else code


def run(args: argparse.Namespace) -> int:
    from sweep import driver

    try:
        if args.resume:
            if args.no_confirm or any(getattr(args, flag) is not None for flag in CONFIRM_FLAGS):
                raise UserError("--resume continues the experiment as it was planned; to confirm again with other "
                                "--confirm-top/--confirm-seeds, or to continue its confirm phase with more seeds "
                                "(--max-seeds), once it ended, use --confirm DIR")
            return driver.resume(args)
        if args.trust:
            return driver.trust_experiment(args)
        if args.confirm:
            check_confirm_flags(args)
            return driver.confirm_again(args)
        params, plan, record, notes = plan_sweep(args)
        from sweep.tuner import check_searcher  # Ray and Optuna: only once the cheap checks passed

        check_searcher(plan, params)
        if args.dry_run:
            for note in notes:
                print(note, file=sys.stderr)
            print_dry_run(params, plan, record, args, build_parser().parse_args)
            return 0
        return driver.start(args, params, plan, record, notes)  # the notes once its own checks passed
    except UserError as exc:
        print(f"run.py: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before Tune ran (it returns what it has instead of raising)
        print("run.py: interrupted before the trials started; nothing new ran", file=sys.stderr)
        return 130
    except SystemExit as exc:  # SIGTERM while ray.init held its own handler (it exits; Ray then dumps its stack)
        if exc.code != signal.SIGTERM:
            raise
        print("run.py: terminated before the trials started; nothing new ran", file=sys.stderr)
        return 143


if __name__ == "__main__":
    run_cli(main)
