"""Planning a sweep, as plain data: space -> overrides -> seeds -> smoke limits -> phases.

``run.py`` only parses flags and ``driver.py`` only runs phases; what runs is decided here.

A sweep has one or two phases, each its own Ray Tune experiment under the experiment directory:

- **screen** (``EXP/screen``): the space's trials under its scheduler (ASHA by default), ranked on
  validation accuracy;
- **confirm** (``EXP/confirm``, unless ``--no-confirm``), planned when the screen has ended: arms run
  to their end under FIFO, each with ``--confirm-seeds`` fresh seeds (never a seed the screen used):
  the screen's ``--confirm-top`` best arms, the leave-one-out neighbours of its best arm, and the
  all-reference arm (``analysis.confirm.confirm_set``); for a random or Optuna search, the top
  configs only. Its trials are one ``points_to_evaluate`` per arm times a grid of the seeds.

``sweep.json`` records both: ``plan`` (the screen's :class:`Plan`), ``params`` (the screen's space)
and ``phases`` (``{"screen": {...}, "confirm": {"top", "seeds", "arms", ...}}``); the confirm
phase's Plan and params follow from them (:func:`confirm_phase`), so ``--resume`` rebuilds either.
An experiment recorded before phases existed has no ``phases``: its one experiment is at its root.

``--smoke-test`` lives here too: its settings, the cut of the space, the per-trial limits
(:func:`trial_values`), the most epochs and the checks it implies.
"""
from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from sweep import vocabulary as vocab
from sweep.spaces import BUNDLES, merge_config
from training.config import ConfigError, TrainConfig, UserError

METRIC, MODE = "val_rank", "max"  # what ASHA compares at each rung and the searcher maximises (sweep.trainable)
RESULTS_ENV = "ABLATION_RESULTS_DIR"
SCREEN, CONFIRM = "screen", "confirm"
CONFIRM_TOP, CONFIRM_SEEDS = 3, 3  # defaults of --confirm-top and --confirm-seeds


@dataclass
class Plan:
    """Everything a Tuner needs, as plain data (what sweep.json stores, so --resume can rebuild it)."""
    experiment_dir: str  # storage_path/name: a local directory or a URI Ray supports
    search: str
    scheduler: str
    num_samples: int
    max_t: int  # most epochs any trial runs (ASHA/HyperBand's max_t)
    grace_period: int
    reduction_factor: float
    cpus_per_trial: float
    gpus_per_trial: float
    max_concurrent: int | None
    max_failures: int
    search_seed: int
    smoke: bool = False  # --smoke-test: per-trial limits in the trainable
    objectives: list[list[str]] | None = None  # [[metric, min|max], ...]: a multi-objective search
    phase: str = ""  # the phase's directory under experiment_dir ("" before phases: the root)
    points: list[dict[str, Any]] | None = field(default=None)  # the confirm phase's arms, one trial per seed
    test_shown: bool = True  # False for a screen that a confirm phase follows: it shows validation only

    @property
    def tune_dir(self) -> str:
        """The phase's Ray Tune experiment directory."""
        return f"{self.experiment_dir.rstrip('/')}/{self.phase}" if self.phase else self.experiment_dir

    @property
    def storage_path(self) -> str:
        return self.tune_dir.rstrip("/").rsplit("/", 1)[0]

    @property
    def name(self) -> str:
        return self.tune_dir.rstrip("/").rsplit("/", 1)[1]

    @property
    def experiment_name(self) -> str:
        return self.experiment_dir.rstrip("/").rsplit("/", 1)[1]


# ------------------------------------------------------------------------------------- smoke test
# --smoke-test, after the Ray Tune examples' flag of that name: synthetic data, 4,096 training images
# of 16x16 (and 1,365 for validation), two epochs of 128 steps, no latency timing (explicit fields, so
# the user's --epochs/--dataset/--set still win), then per trial (smoke_limits) SqueezeNet at a quarter
# width at most and any preset's fine-tuning phase at one epoch at most; the space is cut to a few
# trials (smoke_params). Enough steps to learn with any recipe (the ablation's baseline and holistic
# arms reached 57% and 30% validation accuracy here, chance 10%, in ~6 s each on one core); 512 images
# at batch 64 gave 7 steps and stayed below chance.
SMOKE_SETTINGS: dict[str, Any] = {"dataset": "synthetic", "subset": 4096, "val_fraction": 0.25, "image_size": 16,
                                  "epochs": 2, "batch_size": 32, "eval_batch_size": 512, "measure_latency": False}
SMOKE_MAX_SAMPLES = 4  # trials of a random/optuna space under --smoke-test


def smoke_limits(values: dict[str, Any]) -> dict[str, Any]:
    """Cap the expensive knobs of one resolved trial (ResNets have no width knob: they keep theirs)."""
    limited = {**values, "finetune_epochs": min(values["finetune_epochs"], 1)}
    if values["model"].startswith("squeezenet"):
        limited["width"] = min(values["width"], 0.25)
    return limited


def smoke_params(params: dict[str, Any]) -> dict[str, Any]:
    """Cut grid axes for --smoke-test: the first axis keeps its first and last values (baseline vs
    holistic, none vs channel), every other grid axis its first value only."""
    cut, first = {}, True
    for key, spec in params.items():
        if isinstance(spec, Mapping) and "grid" in spec:
            values = spec["grid"]
            cut[key] = ({"grid": [values[0], values[-1]] if len(values) > 1 else values} if first
                        else values[0])
            first = False
        else:
            cut[key] = spec
    return cut


def smoke_samples(search: str, samples: int) -> int:
    return samples if search == "grid" else min(samples, SMOKE_MAX_SAMPLES)


def trial_values(config: Mapping[str, Any], smoke: bool = False) -> dict[str, Any]:
    """Every field of one trial from its Ray config (``sweep.spaces.merge_config``), with
    --smoke-test's per-trial limits when `smoke`. Not yet validated (see :func:`trial_config`)."""
    values = merge_config(config)
    return smoke_limits(values) if smoke else values


def trial_config(config: Mapping[str, Any], smoke: bool = False) -> TrainConfig:
    """One trial's validated TrainConfig from its Ray config, as the trainable runs it."""
    return TrainConfig.from_dict(trial_values(config, smoke))


# ------------------------------------------------------------------------------------- checks
def check_trials(params: Mapping[str, Any], smoke: bool, exhaustive: bool,
                 source: str) -> list[TrainConfig]:
    """The distinct trials to check before anything runs: every grid combination when `exhaustive`
    (else one), and each choice value and reachable range end of the other axes on top of the first.
    Seeds change no trial's validity: one seed stands for all (a grid of 10^6 seeds is one arm)."""
    params = {k: vocab.representative(v) if k == "seed" else v for k, v in params.items()}
    base = {k: vocab.representative(v) for k, v in params.items()}
    configs = vocab.expand_grid(params) if exhaustive else [base]
    for key, spec in params.items():
        if isinstance(spec, Mapping) and "grid" not in spec:
            configs += [{**base, key: value} for value in vocab.reachable(spec)]
    try:
        return list(dict.fromkeys(trial_config(config, smoke) for config in configs))
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def max_epochs(params: Mapping[str, Any], smoke: bool) -> int:
    """The most epochs (main + fine-tuning) any trial of the space can run: ASHA's max_t."""
    relevant = {k: vocab.reachable(v) if isinstance(v, Mapping) else [v]
                for k, v in params.items() if k in (*BUNDLES, "epochs", "finetune_epochs")}
    return max(values["epochs"] + values["finetune_epochs"]
               for values in (trial_values(dict(zip(relevant, combo)), smoke)
                              for combo in itertools.product(*relevant.values())))


# ------------------------------------------------------------------------------------- the screen
def parse_sets(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set takes KEY=VALUE, got {item!r}")
        out[key.replace("-", "_")] = value
    return out


def plan_sweep(args: argparse.Namespace) -> tuple[dict[str, Any], Plan, dict[str, Any]]:
    """(params, plan, record): the screen's validated space with every override, its Ray settings,
    and sweep.json's record with the phases."""
    name, space = vocab.load_space(args.space)
    overrides = dict(SMOKE_SETTINGS) if args.smoke_test else {}
    overrides.update({k: v for k, v in (("epochs", args.epochs), ("dataset", args.dataset)) if v is not None})
    overrides.update(parse_sets(args.sets))
    objectives = (vocab.parse_objectives(args.objectives, "--objectives") if args.objectives is not None
                  else space.get("objectives"))
    scheduler = args.scheduler or space["scheduler"]
    notes = []  # printed once every check has passed: an error stays the one line on stderr
    if objectives:
        if args.search not in (None, "optuna"):
            raise UserError(f"--objectives runs Optuna's NSGA-II; --search {args.search} cannot search "
                            "several objectives")
        if args.scheduler not in (None, "fifo"):
            notes.append(f"note: {args.scheduler} compares trials on one metric; a multi-objective search "
                         "runs every trial to its end (fifo)")
        scheduler = "fifo"
        if any(metric in vocab.LATENCY_METRICS for metric, _ in objectives):
            if str(parse_sets(args.sets).get("measure_latency", True)).lower() in ("false", "0", "no"):
                raise UserError("a latency objective needs measure_latency=true")
            overrides["measure_latency"] = True
    params = vocab.apply_overrides(space, overrides, name)["params"]
    search = "optuna" if objectives else args.search or space["search"]
    vocab.check_search(params, search, name)
    params, num_samples = vocab.add_seeds(params, search, args.samples or space["samples"])
    if args.smoke_test:
        params, num_samples = smoke_params(params), smoke_samples(search, num_samples)
    params["data_dir"] = absolute_data_dir(params)
    configs = check_trials(params, args.smoke_test, exhaustive=search == "grid", source=name)
    vocab.check_arms(configs, name)
    check_numbers(args)
    confirm = confirm_settings(args, space, params, objectives)
    storage = absolute_location(args.storage_path or os.environ.get(RESULTS_ENV) or "runs/sweeps")
    experiment = f"{storage.rstrip('/')}/{experiment_name(args.name) or default_name(name, args.smoke_test)}"
    max_t = max_epochs(params, args.smoke_test)
    plan = Plan(experiment, search, scheduler, num_samples, max_t, args.grace_period or default_grace(max_t),
                args.reduction_factor, args.cpus_per_trial, args.gpus_per_trial or 0.0, args.max_concurrent,
                args.max_failures or 0, args.search_seed, args.smoke_test, objectives, phase=SCREEN,
                test_shown=confirm is None)
    expected = vocab.count_trials(params, num_samples)
    phases: dict[str, Any] = {SCREEN: {"dir": SCREEN, "expected_trials": expected}}
    if confirm:
        phases[CONFIRM] = confirm
    record = {"space_name": name, "space": space, "overrides": overrides, "params": params,
              "options": vars(args), "expected_trials": expected, "metric": METRIC, "mode": MODE,
              "datasets": sorted({(c.dataset, c.image_size) for c in configs}), "phases": phases}
    from sweep.experiment import check_searcher  # Ray and Optuna: only once the cheap checks passed

    check_searcher(plan, params)
    for note in notes:
        print(note, file=sys.stderr)
    return params, plan, record


def default_grace(max_t: int) -> int:
    """ASHA's first rung at a third of training (at least 2 epochs). Learning-rate schedules make early
    validation accuracy a poor guide across recipes: on the CPU ablation of docs/PERFORMANCE.md
    (section 4) the holistic recipe's OneCycle arms trailed the baseline's until about half-way, and a
    first rung at 1 of 9 epochs stopped the full factorial's best arm (the confirmed best was its 4th);
    at 3 of 9 the screen ranked it first, at 33% of the full factorial's trial-epochs (one run each:
    chosen on that benchmark, for a mechanism the full factorial's curves show)."""
    return max(2, max_t // 3)


def check_numbers(args: argparse.Namespace) -> None:
    """The numeric flags' ranges, each a one-line error."""
    for number, flag in ((args.samples, "--samples"), (args.max_concurrent, "--max-concurrent"),
                         (args.grace_period, "--grace-period")):
        if number is not None and number < 1:
            raise UserError(f"{flag} must be >= 1")
    check_confirm_numbers(args)
    if args.max_failures is not None and args.max_failures < 0:
        raise UserError("--max-failures must be >= 0 (retries of an errored trial)")
    if args.reduction_factor <= 1:
        raise UserError("--reduction-factor must be > 1 (each rung keeps 1/F of the trials)")
    if args.cpus_per_trial <= 0:
        raise UserError("--cpus-per-trial must be > 0")
    if not 0 <= args.search_seed < 2**32:  # numpy's and Optuna's seeds alike
        raise UserError("--search-seed must be in [0, 2**32 - 1]")
    if args.gpus_per_trial is not None and (args.gpus_per_trial < 0 or
                                            args.gpus_per_trial > 1 and not args.gpus_per_trial.is_integer()):
        raise UserError("--gpus-per-trial takes a fraction up to 1 or a whole number of GPUs")


def check_confirm_numbers(args: argparse.Namespace) -> None:
    if args.confirm_top is not None and args.confirm_top < 1:
        raise UserError("--confirm-top must be >= 1")
    if args.confirm_seeds is not None and args.confirm_seeds < 2:
        raise UserError("--confirm-seeds must be >= 2: an arm's interval needs two seeds or more")


def experiment_name(name: str | None) -> str | None:
    """--name is one directory inside --storage-path: no separators, no `..`."""
    if name is not None and (not name.strip() or "/" in name or os.sep in name or ".." in name):
        raise UserError(f"--name {name!r} must be a plain directory name (no '/', no '..'): the experiment "
                        "goes inside --storage-path")
    return name


def absolute_location(location: str) -> str:
    return location if "://" in location else str(Path(location).expanduser().resolve())


def absolute_data_dir(params: dict[str, Any]) -> str:
    """Trials run in their own working directories (and maybe other nodes): pass an absolute path."""
    from training.config import default_data_dir

    given = params.get("data_dir", "")
    if not isinstance(given, str):
        raise UserError("data_dir must be one fixed path, not an axis")
    return str(Path(given).expanduser().resolve()) if given else default_data_dir()


def default_name(space: str, smoke: bool) -> str:
    return f"{space}{'-smoke' if smoke else ''}-{time.strftime('%Y%m%d-%H%M%S')}"


# ------------------------------------------------------------------------------------- the confirm
def confirm_settings(args: argparse.Namespace, space: Mapping[str, Any], params: Mapping[str, Any],
                     objectives: Any) -> dict[str, Any] | None:
    """The confirm phase as planned before the screen: top K, S fresh seeds, the factors; None when
    it does not run (--no-confirm; a space that says `confirm: false` unless a --confirm-* flag asks
    for it; a multi-objective search, which has a front rather than a best arm)."""
    asked = args.confirm_top is not None or args.confirm_seeds is not None
    if args.no_confirm:
        if asked:
            raise UserError("--no-confirm runs the screen only: drop --confirm-top/--confirm-seeds")
        return None
    if objectives:
        if asked:
            raise UserError("a multi-objective search gives a front, not a best arm: it has no confirm phase "
                            "(drop --confirm-top/--confirm-seeds)")
        return None
    if not space.get("confirm", True) and not asked:
        return None
    return new_confirm(params, args.confirm_top or CONFIRM_TOP, args.confirm_seeds or CONFIRM_SEEDS)


def new_confirm(params: Mapping[str, Any], top: int, seeds: int, name: str = CONFIRM) -> dict[str, Any]:
    factors = [k for k, v in params.items() if isinstance(v, Mapping) and k != "seed"]
    return {"dir": name, "top": top, "seeds": fresh_seeds(params, seeds), "factors": factors}


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


def confirm_arms(trials: Any, epochs: Any, params: Mapping[str, Any], confirm: Mapping[str, Any],
                 search: str) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """([{"levels", "why"}, ...], references): the confirm set of the screen's trial and epoch frames
    (analysis.confirm: the ranking on validation, then top K, the best arm's leave-one-out neighbours
    and the all-reference arm). References exist for a grid screen only: per factor, the level effects
    are measured against (analysis.effects.reference_level: the space's order), as the trials ran them."""
    import pandas as pd

    from analysis.confirm import confirm_set, screen_ranking
    from analysis.effects import reference_level

    factors = confirm["factors"]
    grid = search == "grid" and all("grid" in params[f] for f in factors)
    references = ({f: as_ran(reference_level(pd.Series(params[f]["grid"], name=f)), trials[f]) for f in factors}
                  if grid and factors else None)
    chosen = confirm_set(screen_ranking(trials, epochs, factors), factors, references, confirm["top"])
    arms = [{"levels": {f: plain(row[f]) for f in factors}, "why": row["why"]} for row in chosen.to_dict("records")]
    return arms, references


def as_ran(level: Any, ran: Any) -> Any:
    """A space's level as the trials ran it (TrainConfig's type: a YAML grid [1, 5] of a float field
    ran as 1.0 and 5.0), so that an arm, its neighbours and the reference are written alike."""
    return next((plain(value) for value in ran if value == level), level)


def plain(value: Any) -> Any:
    """A NumPy scalar as the Python value JSON and Ray's config hold."""
    return value.item() if hasattr(value, "item") else value


def confirm_phase(screen: Plan, params: Mapping[str, Any], confirm: Mapping[str, Any]) -> tuple[dict[str, Any], Plan]:
    """(params, plan) of the confirm phase of `confirm` (sweep.json's phases.confirm, arms chosen):
    the screen's fixed values, each factor a choice of the chosen arms' levels, the fresh seeds as a
    grid; one point per arm, every trial to its end (FIFO)."""
    arms = [arm["levels"] for arm in confirm["arms"]]
    fixed = {k: v for k, v in params.items() if not isinstance(v, Mapping)}
    axes = {f: {"choice": list({repr(arm[f]): arm[f] for arm in arms}.values())} for f in confirm["factors"]}
    confirm_params = {**fixed, **axes, "seed": {"grid": list(confirm["seeds"])}}
    plan = replace(screen, phase=confirm["dir"], search="grid", scheduler="fifo", num_samples=len(arms),
                   points=arms, objectives=None, max_t=max_epochs(confirm_params, screen.smoke), test_shown=True)
    return confirm_params, plan


def phase_plans(record: Mapping[str, Any], screen: Plan) -> dict[str, tuple[dict[str, Any], Plan]]:
    """{phase: (params, plan)} of the phases sweep.json records and can run now: the screen, and the
    confirm once its arms are chosen."""
    out = {SCREEN: (dict(record["params"]), screen)}
    confirm = record.get("phases", {}).get(CONFIRM)
    if confirm and confirm.get("arms"):
        out[CONFIRM] = confirm_phase(screen, record["params"], confirm)
    return out
