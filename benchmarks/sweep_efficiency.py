"""Benchmark 4, sweep efficiency: the `ablation` space run twice through the sweep CLI, with ASHA and
with FIFO (every trial to the end), on the same reduced settings: total trial-epochs, wall time, and
whether the arm ASHA picks is FIFO's best arm (or how many points of FIFO's accuracy it gives up).

An arm is one combination of the space's grid axes; with several seeds its accuracy is the seeds'
mean. Each run picks the arm with the best validation accuracy (as sweep/run.py's summary does); the
comparison reads both picks' accuracies in the FIFO run, where every arm trained to the end.

    python benchmarks/sweep_efficiency.py --quick
    python benchmarks/sweep_efficiency.py --out benchmarks/results/cpu-sweep-efficiency.json
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import from the repository root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from benchmarks import common  # noqa: E402

# A CPU-sized ablation: a quarter-width SqueezeNet on 512 Fashion-MNIST images (plus 512 for
# validation, so one image is 0.2 points), 9 epochs. ASHA's rungs at 1 and 3 epochs (grace 1,
# reduction 3) keep the ratio max_t / grace = 9 of the full-size default (18 / 2).
FULL = {"dataset": "fashion-mnist", "epochs": 9, "grace_period": 1, "reduction_factor": 3,
        "sets": ["subset=512", "val_fraction=0.5", "width=0.25", "batch_size=32", "measure_latency=false"]}
# --quick: four arms (activation x recipe) of synthetic data, a few seconds of training per run.
QUICK = {"dataset": "synthetic", "epochs": 3, "grace_period": 1, "reduction_factor": 3,
         "sets": ["subset=128", "val_fraction=0.5", "width=0.25", "batch_size=32", "measure_latency=false",
                  "attention=none", "residual=none", "dsconv=false"]}


def run_sweep(scheduler: str, args, plan: dict, storage: str) -> float:
    """One sweep through the CLI's own entry point; its wall time in seconds."""
    from sweep import run

    argv = ["--space", args.space, "--scheduler", scheduler, "--dataset", plan["dataset"],
            "--epochs", str(plan["epochs"]), "--grace-period", str(plan["grace_period"]),
            "--reduction-factor", str(plan["reduction_factor"]), "--samples", str(args.samples),
            "--cpus-per-trial", str(args.cpus_per_trial), "--storage-path", storage, "--name", scheduler,
            "--set", *plan["sets"], *args.set]
    started = time.perf_counter()
    status = run.main(argv)
    if status != 0:
        raise SystemExit(f"sweep_efficiency.py: the {scheduler} sweep failed (exit {status}): "
                         f"python sweep/run.py {' '.join(argv)}")
    return time.perf_counter() - started


def arm_table(experiment):
    """Mean best validation and test accuracy per arm (the space's grid axes), best arm first."""
    axes = [k for k, v in experiment.sweep["params"].items() if isinstance(v, dict) and k != "seed"]
    trials = experiment.trials.copy()
    trials["arm"] = trials[axes].astype(str).agg(" ".join, axis=1)
    table = trials.groupby("arm")[["best_val_acc", "test_acc"]].mean()
    return table.sort_values("best_val_acc", ascending=False), axes


def summarise(name: str, experiment, wall: float, fifo_arms) -> dict:
    arms, axes = arm_table(experiment)
    pick = arms.index[0]
    in_fifo = fifo_arms.loc[pick]
    best = fifo_arms.iloc[0]
    return {"scheduler": name, "trials": len(experiment.trials), "trial-epochs": len(experiment.epochs),
            "errored": int((experiment.trials["stop_reason"] == "errored").sum()), "wall s": wall,
            "picked arm": pick, "own val %": float(arms.iloc[0]["best_val_acc"]),
            "FIFO val % of pick": float(in_fifo["best_val_acc"]),
            "FIFO test % of pick": float(in_fifo["test_acc"]),
            "val gap pts": float(best["best_val_acc"] - in_fifo["best_val_acc"]),
            "test gap pts": float(best["test_acc"] - in_fifo["test_acc"]),
            "rank in FIFO": int(list(fifo_arms.index).index(pick)) + 1, "axes": " ".join(axes)}


def main(argv: list[str] | None = None) -> dict:
    p = common.make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--space", default="ablation")
    p.add_argument("--samples", type=int, default=1, help="seeds per arm")
    p.add_argument("--cpus-per-trial", type=float, default=1)
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="more TrainConfig fields for every trial of both runs (e.g. width=0.5)")
    p.add_argument("--storage-path", help="keep both experiments here (default: a temporary directory)")
    args = p.parse_args(argv)
    device = common.setup(args)
    plan = QUICK if args.quick else FULL
    import ray

    from analysis.load import load

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    with tempfile.TemporaryDirectory(prefix="sweep-efficiency-") as tmp:
        storage = str(Path(args.storage_path or tmp).resolve())
        ray.init(include_dashboard=False)  # one Ray for both runs: the CLI leaves it running
        try:
            walls = {s: run_sweep(s, args, plan, storage) for s in ("asha", "fifo")}
        finally:
            ray.shutdown()
        experiments = {s: load(Path(storage) / s) for s in walls}
        fifo_arms, _ = arm_table(experiments["fifo"])
        rows = [summarise(s, experiments[s], walls[s], fifo_arms) for s in walls]
    fifo_epochs = rows[1]["trial-epochs"]
    for row in rows:
        row["share of FIFO epochs"] = row["trial-epochs"] / fifo_epochs
    targets = {"asha_epochs_at_most_35pct": rows[0]["share of FIFO epochs"] <= 0.35,
               "asha_pick_within_0.5pt_val": rows[0]["val gap pts"] <= 0.5,
               "asha_pick_within_0.5pt_test": rows[0]["test gap pts"] <= 0.5}
    settings = {"space": args.space, "samples": args.samples, "cpus_per_trial": args.cpus_per_trial,
                **plan, "sets": plan["sets"] + args.set}
    top = fifo_arms.head(5).round(2).reset_index().to_dict("records")
    return common.finish(args, device, "sweep_efficiency", settings, rows,
                         {"targets": targets, "fifo_top5_arms": top})


if __name__ == "__main__":
    main()
