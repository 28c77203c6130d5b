"""Benchmark 4, sweep efficiency: the `ablation` space through the sweep CLI, a screen (one seed per
arm) under --scheduler (default: the space's, successive halving; or asha, continuation ASHA) then
the confirm phase (the screen's top K arms, the best arm's leave-one-out neighbours and the
all-reference arm, S fresh seeds each, to the end, one fixed look: --max-seeds S), against the full factorial to the end under FIFO
with S seeds per arm (`--scheduler fifo --samples S --no-confirm`), on the same reduced settings:
total trial-epochs, wall time, whether the confirmed best arm is the full factorial's best arm, and
how fair the screen was: Spearman's rank correlation between the screen's ranking of every
arm and the full factorial's mean test accuracy, whether the full factorial's best arm (by mean test
accuracy) was confirmed, the confirmed best's rank there, and whether each factor's effect in the
screen's effects table (the report's: a halving screen's first rung, ASHA's first rung epoch) has the
sign of the full factorial's where that one is resolved (its 95% interval excludes 0).

An arm is one combination of the space's grid axes. Both runs pick the arm with the best mean
validation accuracy over its seeds (the confirm run among its confirmed arms, over the fresh seeds);
the comparison reads both picks in the full factorial, where every arm trained to the end with S seeds
(mean test accuracy, 95% t interval over the seeds: analysis.confirm.arm_means).

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
# validation, so one image is 0.2 points), 9 epochs; ASHA as sweep/run.py sets it by default (grace
# period a third of the epochs: one rung at 3, reduction factor 3), or --grace-period.
FULL = {"dataset": "fashion-mnist", "epochs": 9, "reduction_factor": 3, "seeds": 3, "top": 3,
        "sets": ["subset=512", "val_fraction=0.5", "width=0.25", "batch_size=32", "measure_latency=false"]}
# --quick: four arms (activation x recipe) of synthetic data, a few seconds of training per run; the
# machinery only (with 4 arms, the confirm set is most of the grid).
QUICK = {"dataset": "synthetic", "epochs": 2, "reduction_factor": 3, "seeds": 2, "top": 1,
         "sets": ["subset=128", "val_fraction=0.5", "width=0.25", "batch_size=32", "measure_latency=false",
                  "attention=none", "residual=none", "dsconv=false"]}
TARGET_SHARE = 0.40  # screen + confirm at most 40% of the full factorial's trial-epochs
TARGET_SPEARMAN = 0.7  # the default screen's ranking of all arms vs the full factorial's


def run_sweep(name: str, args, plan: dict, storage: str, extra: list[str]) -> float:
    """One sweep through the CLI's own entry point; its wall time in seconds."""
    from sweep import run

    argv = ["--space", args.space, "--dataset", plan["dataset"], "--epochs", str(plan["epochs"]),
            *(["--grace-period", str(args.grace_period)] if args.grace_period else []),
            "--search-seed", str(args.search_seed),
            "--reduction-factor", str(plan["reduction_factor"]),
            "--cpus-per-trial", str(args.cpus_per_trial), "--storage-path", storage, "--name", name,
            *extra, "--set", *plan["sets"], *args.set]
    started = time.perf_counter()
    status = run.main(argv)
    if status != 0:
        raise SystemExit(f"sweep_efficiency.py: the {name} sweep failed (exit {status}): "
                         f"python sweep/run.py {' '.join(argv)}")
    return time.perf_counter() - started


def arm_table(trials, factors):
    """Per arm (analysis.confirm.arm_means): n, mean best validation accuracy, mean test accuracy with
    its 95% t interval over the seeds; best by validation first, indexed by the arm's label."""
    from analysis.confirm import arm_means
    from study.selection import arm_labels

    labels = arm_labels(trials, factors)
    order = trials.groupby(labels, sort=False)["best_val_acc"].mean().sort_values(ascending=False, kind="stable")
    return arm_means(trials, factors, list(order.index)).set_index("arm")


def fairness(screen, confirm_spec, factors, full, ff_effects) -> dict:
    """The screen's ranking and effects against the full factorial's (module docstring)."""
    import pandas as pd
    from scipy.stats import spearmanr

    from analysis import effects
    from analysis.report import screen_compared
    from study.selection import arm_label, arm_labels, screen_ranking

    ranking = screen_ranking(screen.trials, screen.epochs, factors)
    ranks = dict(zip(arm_labels(ranking, factors), ranking["rank"]))
    by_test = full.sort_values("mean", ascending=False)
    shared = [arm for arm in by_test.index if arm in ranks]
    rho, p = spearmanr([-ranks[a] for a in shared], by_test.loc[shared, "mean"])
    confirmed_set = [arm_label(a["levels"], factors) for a in confirm_spec["arms"]]
    _, compared = screen_compared(screen)  # the arms that learned (study.learning)
    frame = compared.frame
    designed = effects.designed_factors(frame, factors) if len(frame) > 1 else []
    none = pd.DataFrame({"effect": []}, index=pd.MultiIndex.from_tuples([], names=["factor", "level"]))
    screen_effects = (effects.main_effects(effects.fit(frame, designed, compared.metric)).set_index(["factor", "level"])
                      if designed else none)  # no effects where fewer than two learners are left
    signs = []
    for (factor, level), row in ff_effects.set_index(["factor", "level"]).iterrows():
        resolved = row["ci_low"] > 0 or row["ci_high"] < 0
        mine = screen_effects["effect"].get((factor, level))
        signs.append({"factor": factor, "level": str(level), "full_effect": round(float(row["effect"]), 2),
                      "full_ci": [round(float(row["ci_low"]), 2), round(float(row["ci_high"]), 2)],
                      "resolved": bool(resolved), "screen_effect": None if mine is None else round(float(mine), 2),
                      "same_sign": None if mine is None else bool((mine > 0) == (row["effect"] > 0))})
    return {"spearman_all_arms": float(rho), "spearman_p": float(p), "arms_ranked": len(shared),
            "full_best_by_test": by_test.index[0], "full_best_by_test_confirmed": by_test.index[0] in confirmed_set,
            "screen_effects_from": compared.label, "effect_signs": signs,
            "screen_arms_at_chance": 0 if compared.at_chance is None else len(compared.at_chance),
            "resolved_signs_agree": all(s["same_sign"] for s in signs if s["resolved"])}


def main(argv: list[str] | None = None) -> dict:
    p = common.make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--space", default="ablation")
    p.add_argument("--seeds", type=int, help="S: fresh seeds per confirmed arm, and seeds per arm of the full "
                                             "factorial (default 3; --quick 2)")
    p.add_argument("--top", type=int, help="K: the screen's best arms confirmed (default 3; --quick 1)")
    p.add_argument("--cpus-per-trial", type=float, default=1)
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="more TrainConfig fields for every trial of both runs (e.g. width=0.5)")
    p.add_argument("--storage-path", help="keep both experiments here (default: a temporary directory)")
    p.add_argument("--full", metavar="EXPERIMENT_DIR",
                   help="read the full factorial from this earlier run (same settings) instead of running it")
    p.add_argument("--grace-period", type=int, help="ASHA's grace period of the screen (default: sweep/run.py's)")
    p.add_argument("--search-seed", type=int, default=0, help="the screen's launch order (sweep/run.py's flag; 0)")
    p.add_argument("--scheduler", help="the screen's scheduler (default: the space's, successive halving)")
    p.add_argument("--design", choices=("full", "fraction"), default="full",
                   help="the screen's design: every arm, or a resolution-IV fraction run to the end (sweep/run.py's flag)")
    args = p.parse_args(argv)
    device = common.setup(args)
    plan = dict(QUICK if args.quick else FULL)
    args.seeds, args.top = args.seeds or plan["seeds"], args.top or plan["top"]
    import ray

    from study.load import load

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    with tempfile.TemporaryDirectory(prefix="sweep-efficiency-") as tmp:
        storage = str(Path(args.storage_path or tmp).resolve())
        ray.init(address="local", include_dashboard=False)  # a private Ray for both runs, never a `ray start` one
        try:
            walls = {"confirm": run_sweep("confirm", args, plan, storage, [
                "--confirm-top", str(args.top), "--confirm-seeds", str(args.seeds), "--max-seeds", str(args.seeds),
                *(["--scheduler", args.scheduler] if args.scheduler else []), "--design", args.design])}
            if not args.full:
                walls["fifo"] = run_sweep("fifo", args, plan, storage, [
                    "--scheduler", "fifo", "--samples", str(args.seeds), "--no-confirm"])
        finally:
            ray.shutdown()
        runs = {"confirm": load(Path(storage) / "confirm"), "fifo": load(args.full or Path(storage) / "fifo")}
    screen, confirm = runs["confirm"].phase("screen"), runs["confirm"].phase("confirm")
    factors = runs["confirm"].sweep["phases"]["confirm"]["factors"]
    full = arm_table(runs["fifo"].trials, factors)
    confirmed = arm_table(confirm.trials, factors)
    pick, best = confirmed.index[0], full.iloc[0]
    in_full = full.loc[pick]
    epochs = {"screen": len(screen.epochs), "confirm": len(confirm.epochs), "fifo": len(runs["fifo"].epochs)}
    scheduler = runs["confirm"].sweep["plan"]["scheduler"]
    design = " resolution-IV fraction," if args.design == "fraction" else ""
    rows = [{"run": f"screen ({scheduler},{design} 1 seed)", "trials": len(screen.trials), "trial-epochs": epochs["screen"]},
            {"run": f"confirm (fifo, {args.seeds} fresh seeds)", "trials": len(confirm.trials),
             "trial-epochs": epochs["confirm"]},
            {"run": "screen + confirm", "trials": len(screen.trials) + len(confirm.trials),
             "trial-epochs": epochs["screen"] + epochs["confirm"], "wall s": walls["confirm"], "picked arm": pick},
            {"run": f"full factorial (fifo, {args.seeds} seeds)", "trials": len(runs["fifo"].trials),
             "trial-epochs": epochs["fifo"], "wall s": walls.get("fifo", float("nan")), "picked arm": full.index[0]}]
    for row in rows:
        row["share of full epochs"] = row["trial-epochs"] / epochs["fifo"]
    share = rows[2]["share of full epochs"]
    comparison = {"confirmed arm": pick, "its confirmed test % (fresh seeds)": float(confirmed.iloc[0]["mean"]),
                  "its full-factorial test %": float(in_full["mean"]), "full best arm": full.index[0],
                  "full best test %": float(best["mean"]),
                  "full best 95% CI": [float(best["ci_low"]), float(best["ci_high"])],
                  "rank of the confirmed arm in the full factorial": int(list(full.index).index(pick)) + 1,
                  "arms confirmed": len(confirmed), "arms in the full factorial": len(full)}
    from analysis import effects
    from study.states import completed

    ended = completed(runs["fifo"].trials)[0]
    ff_effects = effects.main_effects(effects.fit(ended, effects.designed_factors(ended, factors)))
    fair = fairness(screen, runs["confirm"].sweep["phases"]["confirm"], factors, full, ff_effects)
    by_test = list(full.sort_values("mean", ascending=False).index)
    comparison["rank of the confirmed arm in the full factorial by test"] = by_test.index(pick) + 1
    targets = {f"screen_plus_confirm_epochs_at_most_{TARGET_SHARE:.0%}": share <= TARGET_SHARE,
               "confirmed_arm_is_the_full_best_or_inside_its_interval":
                   bool(pick == full.index[0] or best["ci_low"] <= in_full["mean"] <= best["ci_high"]),
               f"spearman_all_arms_at_least_{TARGET_SPEARMAN}": fair["spearman_all_arms"] >= TARGET_SPEARMAN,
               "full_best_by_test_in_the_confirm_set": fair["full_best_by_test_confirmed"],
               "confirmed_best_in_the_full_top_3_by_test": by_test.index(pick) < 3,
               "resolved_full_effects_have_the_screens_sign": fair["resolved_signs_agree"]}
    settings = {"space": args.space, "scheduler": scheduler, "design": args.design, "seeds": args.seeds, "top": args.top, "cpus_per_trial": args.cpus_per_trial,
                "grace_period": runs["confirm"].sweep["plan"]["grace_period"], "search_seed": args.search_seed, **plan, "sets": plan["sets"] + args.set, "full_factorial_from": args.full or "this run"}
    top = full.head(5)[["n", "mean_best_val", "mean", "ci_low", "ci_high"]].round(2).reset_index()
    return common.finish(args, device, "sweep_efficiency", settings, rows,
                         {"targets": targets, "comparison": comparison, "fairness": fair,
                          "full_factorial_top5_arms": top.to_dict("records"),
                          "confirmed_arms": confirmed.round(2).reset_index().to_dict("records")})


if __name__ == "__main__":
    main()
