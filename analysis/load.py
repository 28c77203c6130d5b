"""An experiment directory -> two tidy frames: one row per trial, one row per trial-epoch.

Reads Ray Tune 2.60's files as they lie on disk (no Ray cluster, nothing unpickled), so it works on a
finished, interrupted or still-running experiment:

- ``experiment_state-*.json``: each trial's id, Ray status (PENDING, RUNNING, PAUSED, TERMINATED,
  ERROR), config and directory; the newest file (by name, Ray's rule) wins. A killed driver leaves it as of its last save.
- per trial directory: ``result.json`` (one JSON line per ``tune.report``, i.e. per epoch),
  ``params.json`` (the Ray config), ``trial_config.json`` (the resolved TrainConfig, by our
  trainable) and ``error.txt`` for errored trials;
- ``sweep.json``: what our driver ran (space, options, expected trial count);
- ``trial_records/<trial_id>.json``: the driver's own copy of every result (rows Ray's files lack).

A *phased* experiment (screen, then confirm: sweep.json's ``phases``) keeps each phase's trials in
its own Ray Tune experiment directory below it (``screen/``, ``confirm/``, without their own
sweep.json); :func:`load` reads every phase that exists into one pair of frames, the trials frame's
``phase`` column saying which ("screen" for every trial of an experiment without phases), and
:meth:`Experiment.phase` gives one phase's view. The top sweep.json's plan is the screen's.

Why a trial ended (``stop_reason``), checked in this order:

- ``finished`` / ``early_stopped`` (our patience) / ``diverged``: the trial's final report says so;
- ``errored``: Ray's ERROR status, or an ``error.txt`` without any Ray state;
- ``scheduler_stopped``: TERMINATED without our final report. Ray sets its own ``done=True`` on the
  last result of a trial that ASHA stops, so ``done`` cannot tell; our ``status`` key can;
- ``unfinished``: PENDING, RUNNING or PAUSED when the state was last saved (an interrupted sweep).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from sweep.plan import CONFIRM, SCREEN, trial_values
from sweep.spaces import BUNDLES
from training.config import ConfigError, TrainConfig, UserError, field_names, field_types

FINAL_STATUSES = ("finished", "early_stopped", "diverged")  # our loop's status on its final report
STOP_REASONS = (*FINAL_STATUSES, "scheduler_stopped", "errored", "unfinished")
EPOCH_COLUMNS = ("epoch", "training_iteration", "phase", "lr", "train_loss", "train_acc", "val_loss",
                 "val_acc", "best_val_acc", "best_epoch", "images_per_sec", "epoch_time_s",
                 "elapsed_s", "status", "time_total_s")
# Keys of the last result that are not trial-level columns: Ray's bookkeeping (`done` too, as Ray
# overwrites ours), per-epoch values, and `lr`, which would clash with the config field.
NOT_SUMMARY_KEYS = ("done", "config", "timestamp", "checkpoint_dir_name", "date", "time_this_iter_s",
                    "pid", "hostname", "node_ip", "time_since_restore", "iterations_since_restore",
                    "trial_id", "training_iteration", "epoch", "status", "phase", "lr")
# Always present in the trial frame (NaN where a trial has no final report yet).
SUMMARY_COLUMNS = ("epochs_run", "best_val_acc", "final_val_acc", "test_acc", "test_loss", "params",
                   "flops", "size_mb", "latency_ms_b1", "latency_ms_b256", "wall_time_s", "elapsed_s",
                   "time_total_s")
RENAMED = {"precision": "precision_used"}  # the final report's precision clashes with the config field
RECORDS_DIR = "trial_records"  # the sweep driver's own record of every result, one file per trial
TRIAL_ID = re.compile(r"_([0-9a-f]{5}_\d{5})(?:_|$)")
PHASES = (SCREEN, CONFIRM)  # a phased experiment's phases, in the order they run (sweep/plan.py)


class ExperimentError(UserError):
    """The path is not a readable Ray Tune experiment directory."""


@dataclass(frozen=True)
class Experiment:
    """A loaded experiment: the trial and epoch frames, and what the driver recorded."""
    path: Path
    trials: pd.DataFrame  # one row per trial: stop_reason, config columns, final metrics
    epochs: pd.DataFrame  # one row per trial-epoch: trial_id + EPOCH_COLUMNS
    config_columns: tuple[str, ...]  # TrainConfig fields, then bundle keys (stage, recipe)
    sweep: dict[str, Any] = field(default_factory=dict)  # sweep.json, {} when absent
    skipped: tuple[str, ...] = ()  # trials whose files could not be read: "trial_id (why)"

    @property
    def unfinished(self) -> pd.DataFrame:
        """Trials still pending or running when the experiment was last saved."""
        return self.trials[self.trials["stop_reason"] == "unfinished"]

    @property
    def axes(self) -> tuple[str, ...] | None:
        """The keys the sweep varied (sweep.json's params given as {grid|choice|...: ...}), or None
        without a sweep record."""
        params = self.sweep.get("params")
        if not isinstance(params, dict):
            return None
        return tuple(key for key, value in params.items() if isinstance(value, dict))

    @property
    def phases(self) -> dict[str, dict[str, Any]]:
        """sweep.json's phases of :data:`PHASES` (name -> {"dir", "expected_trials", ...}); {} for an
        experiment without phases (written before screen-then-confirm, or a phase's own view)."""
        return phase_specs(self.sweep)

    @property
    def never_started(self) -> int:
        """Trials sweep.json expected that Ray has no record of (0 when unknown), each phase
        counted against its own expected trials."""
        if self.phases:
            return sum(self.phase(name).never_started for name in self.phases)
        return max(int(self.sweep.get("expected_trials", 0)) - len(self.trials), 0)

    def phase(self, name: str) -> Experiment:
        """One phase's trials and epochs, as an experiment without phases: its directory, its expected
        trials (unknown until the driver records them), the plan only for the screen (the top
        sweep.json's plan is the screen's), and for a screen that a confirm phase follows,
        ``confirm_follows`` (its test accuracy is not to be shown). Without phases, "screen" is the
        whole experiment."""
        if name not in PHASES:
            raise ValueError(f"unknown phase {name!r}: one of {', '.join(PHASES)}")
        if not self.phases:
            keep = self.trials["phase"] == name
            return replace(self, trials=self.trials[keep].reset_index(drop=True),
                           epochs=self.epochs[self.epochs["trial_id"].isin(self.trials["trial_id"][keep])])
        spec = self.phases.get(name, {"dir": name})
        record = {k: v for k, v in self.sweep.items() if k not in ("phases", "expected_trials")
                  and (k != "plan" or name == "screen")}
        if "expected_trials" in spec:
            record["expected_trials"] = spec["expected_trials"]
        if name == "screen" and "confirm" in self.phases:
            record["confirm_follows"] = True
        trials = self.trials[self.trials["phase"] == name].reset_index(drop=True)
        if "trial_dir" in trials:  # relative to the view's path
            trials["trial_dir"] = trials["trial_dir"].astype(str).str.removeprefix(f"{spec['dir']}/")
        return Experiment(self.path / spec["dir"], trials,
                          self.epochs[self.epochs["trial_id"].isin(trials["trial_id"])].reset_index(drop=True),
                          self.config_columns, record,
                          tuple(s for s in self.skipped if s.startswith(f"{spec['dir']}/")))


def load(run_dir: str | Path) -> Experiment:
    """Read `run_dir` (Ray's ``storage_path/name``) into an :class:`Experiment`: every phase of a
    phased experiment; a phase's own directory as that phase's view of the whole."""
    path = Path(run_dir).expanduser()
    if not path.is_dir():
        raise ExperimentError(f"{path} is not a directory")
    sweep = sweep_record(path)
    if is_frames(path, sweep):
        return read_frames(path, sweep)
    parent = {} if sweep else sweep_record(path.parent)
    for name, spec in phase_specs(parent).items():
        if spec["dir"] == path.name:
            return load(path.parent).phase(name)
    smoke = bool(sweep.get("plan", {}).get("smoke", False))
    phases = phase_specs(sweep)
    read = ([read_directory(path / spec["dir"], name, f"{spec['dir']}/", smoke) for name, spec in phases.items()
             if (path / spec["dir"]).is_dir()] if phases else [read_directory(path, "screen", "", smoke)])
    if not any(part.state for part in read) and not sweep:
        inside = sorted(d.name for d in path.iterdir() if d.is_dir() and is_experiment(d))
        hint = f"; experiments inside: {', '.join(inside)}" if inside else "; pass STORAGE/NAME"
        raise ExperimentError(f"{path} is not a Ray Tune experiment directory (no experiment_state-*.json, "
                              f"sweep.json or trial directories){hint}")
    bundle_keys = dict.fromkeys(k for part in read for info in part.state.values()
                                for k in flatten(info["config"]) if k not in field_names())
    config_columns = (*field_names(), *bundle_keys)
    return Experiment(path, trials_frame([row for part in read for row in part.rows], config_columns),
                      epochs_frame([epochs for part in read for epochs in part.epochs]), config_columns, sweep,
                      tuple(what for part in read for what in part.skipped))


FRAMES = ("trials.csv", "epochs.csv")  # a report's copy of the frames (analysis.report.write_report)
# Text columns of the trials frame that are not TrainConfig fields (CSV gives NaN for their empty cells).
TEXT_COLUMNS = ("trial_id", "phase", "stop_reason", "ray_status", "error", "trial_dir", "node", "timing")


def is_frames(path: Path, sweep: dict[str, Any]) -> bool:
    """Whether `path` holds the frames a report wrote (trials.csv, epochs.csv, sweep.json) rather than
    an experiment: no Ray state, no phase directory."""
    return (all((path / name).is_file() for name in FRAMES) and not any(path.glob("experiment_state-*.json"))
            and not any((path / spec["dir"]).is_dir() for spec in phase_specs(sweep).values()))


def read_frames(path: Path, sweep: dict[str, Any]) -> Experiment:
    """The experiment a report's frames describe (trials.csv, epochs.csv and sweep.json, as
    analysis.report writes them beside report.md): the analysis again without the trial directories."""
    try:
        trials = pd.read_csv(path / "trials.csv")
        epochs = pd.read_csv(path / "epochs.csv")
    except (OSError, ValueError) as exc:
        raise ExperimentError(f"{path}: cannot read its frames ({type(exc).__name__}: {exc})") from None
    missing = [c for c in ("trial_id", "phase", "stop_reason", *field_names()) if c not in trials]
    if missing or "trial_id" not in epochs:
        raise ExperimentError(f"{path}: trials.csv/epochs.csv are not a report's frames (missing "
                              f"{', '.join(missing) or 'trial_id in epochs.csv'})")
    text = [c for c in (*TEXT_COLUMNS, *(f for f, kind in field_types().items() if kind is str)) if c in trials]
    trials[text] = trials[text].astype(object).where(trials[text].notna(), "")
    named = (*(sweep.get("params") or {}), *BUNDLES)  # the bundle keys (stage, recipe) and any other axis
    bundles = list(dict.fromkeys(c for c in named if c not in field_names() and c in trials))
    return Experiment(path, trials, epochs, (*field_names(), *bundles), sweep)


@dataclass
class DirectoryRead:
    """One Ray Tune experiment directory as read: its state, each trial's row (with its phase) and
    epochs, and the trials whose files could not be read ("prefix/trial_id (why)")."""
    state: dict[str, dict[str, Any]]
    rows: list[dict[str, Any]] = field(default_factory=list)
    epochs: list[pd.DataFrame] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def read_directory(path: Path, phase: str, prefix: str, smoke: bool) -> DirectoryRead:
    """Every trial of one Ray Tune experiment directory, its rows marked with `phase`, their
    ``trial_dir`` relative to the experiment (`prefix`: the phase's directory and a slash)."""
    read = DirectoryRead(with_unsaved_trials(read_state(path), path))
    for trial_id, info in sorted(read.state.items()):
        try:
            row, epochs = read_trial(path / info["relative_logdir"], trial_id, info, smoke)
        except (ValueError, TypeError, KeyError, AttributeError, OSError) as exc:  # files not as Ray writes them
            read.skipped.append(f"{prefix}{trial_id} ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''})")
            continue
        read.rows.append({**row, "phase": phase, "trial_dir": prefix + row["trial_dir"]})
        read.epochs.append(epochs)
    return read


PLAN_KEYS = ("search", "scheduler", "max_t")  # what the report reads from sweep.json's plan


def sweep_record(path: Path) -> dict[str, Any]:
    """sweep.json as far as it has the expected shape: {} when it is missing or not an object; a plan
    without the keys the report reads, or a non-integer trial count, is left out."""
    sweep = read_json(path / "sweep.json", dict) or {}
    plan = sweep.get("plan")
    if not (isinstance(plan, dict) and all(k in plan for k in PLAN_KEYS)):
        sweep.pop("plan", None)
    if not isinstance(sweep.get("expected_trials", 0), int):
        sweep.pop("expected_trials")
    recorded = sweep.pop("phases", None)
    phases = {name: spec for name in PHASES if (spec := phase_record(recorded, name))}
    if "screen" in phases:  # the driver's other entries (earlier_confirms) kept as they are
        sweep["phases"] = {**{k: v for k, v in recorded.items() if k not in PHASES}, **phases}
    return sweep


def phase_specs(sweep: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The phases of :data:`PHASES` a checked sweep record has, in order; {} without phases."""
    recorded = sweep.get("phases", {})
    return {name: recorded[name] for name in PHASES if name in recorded}


def phase_record(phases: Any, name: str) -> dict[str, Any] | None:
    """sweep.json's record of one phase, or None when it has none of the expected shape (its ``dir``
    one plain directory name); a non-integer trial count is left out."""
    spec = phases.get(name) if isinstance(phases, dict) else None
    if not (isinstance(spec, dict) and isinstance(spec.get("dir"), str)
            and spec["dir"] not in ("", ".", "..") and "/" not in spec["dir"] and "\\" not in spec["dir"]):
        return None
    if not isinstance(spec.get("expected_trials", 0), int):
        spec = {k: v for k, v in spec.items() if k != "expected_trials"}
    return spec


def with_unsaved_trials(state: dict[str, dict[str, Any]], path: Path) -> dict[str, dict[str, Any]]:
    """Add trials whose directory exists (with params.json) but that the saved state does not list:
    the driver was killed before it saved them, or no state was ever saved."""
    state = dict(state)
    for trial_dir in path.iterdir():
        found = TRIAL_ID.search(trial_dir.name)
        if found and found.group(1) not in state and (trial_dir / "params.json").is_file():
            state[found.group(1)] = {"status": None, "config": read_json(trial_dir / "params.json", dict) or {},
                                     "relative_logdir": trial_dir.name}
    return state


def is_experiment(path: Path) -> bool:
    return (path / "sweep.json").is_file() or any(path.glob("experiment_state-*.json"))


def read_state(path: Path) -> dict[str, dict[str, Any]]:
    """trial_id -> {status, config, relative_logdir} from the newest readable experiment_state-*.json.

    Newest by Ray's own rule (``_find_newest_experiment_checkpoint``: the greatest file name, which
    ends in the session's start time, ``%Y-%m-%d_%H-%M-%S``), never by the file's modification time:
    a resumed run writes a new file, while the first run's file can carry a later timestamp (a
    late flush, a copy). A file that cannot be read (cut short by a kill or a full disk) gives way to
    the next."""
    files = sorted(path.glob("experiment_state-*.json"), key=lambda p: p.name, reverse=True)
    data = next((d for d in (read_json(f, dict) for f in files) if d is not None), None)
    trials = {}
    entries = (data or {}).get("trial_data", [])
    for entry in entries if isinstance(entries, list) else []:
        try:
            info = json.loads(entry[0]) if isinstance(entry, list) else entry
            trials[info["trial_id"]] = {"status": info.get("status"),
                                        "config": info.get("config") if isinstance(info.get("config"), dict) else {},
                                        "relative_logdir": info.get("relative_logdir") or info["trial_id"]}
        except (ValueError, TypeError, KeyError, AttributeError, IndexError):
            continue  # an entry not as Ray writes it: the trial may still be found by its directory
    return trials


def read_json(path: Path, kind: type | None = None) -> Any:
    """A JSON file's content, or None when it is missing, unreadable (half written, not UTF-8) or,
    given `kind`, of another type (a list where an object belongs)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if kind is None or isinstance(data, kind) else None


def read_record(path: Path) -> list[dict[str, Any]]:
    """The rows of the sweep driver's own record of a trial (sweep.storage: written atomically, so
    whole even when a full disk cut Ray's result files short); [] without one."""
    record = read_json(path, dict) or {}
    rows = record.get("rows")
    return [row for row in rows if isinstance(row, dict)] if isinstance(rows, list) else []


def read_results(path: Path) -> list[dict[str, Any]]:
    """result.json's lines; a line cut short by a killed process is skipped."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    results = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            results.append(row)
    return results


def read_trial(trial_dir: Path, trial_id: str, info: dict[str, Any],
               smoke: bool) -> tuple[dict[str, Any], pd.DataFrame]:
    """One trial's row (config, stop reason, final metrics) and its per-epoch frame."""
    results = read_results(trial_dir / "result.json")
    results += lost_rows(trial_dir / "progress.csv", results)
    seen = {r.get("training_iteration") for r in results}
    results += [r for r in read_record(trial_dir.parent / RECORDS_DIR / f"{trial_id}.json")
                if r.get("training_iteration") not in seen]
    results.sort(key=lambda r: r.get("training_iteration") or 0)
    last = results[-1] if results else {}
    params = flatten(read_json(trial_dir / "params.json", dict) or info["config"])
    config = {**params, **trial_config(trial_dir, params, smoke)}
    error = error_message(trial_dir / "error.txt")
    metrics = {RENAMED.get(k, k): v for k, v in last.items() if k not in NOT_SUMMARY_KEYS}
    row = {"trial_id": trial_id, "stop_reason": stop_reason(info["status"], last, error is not None),
           "ray_status": info["status"] or "", **config, **metrics,
           "last_epoch": last.get("epoch", last.get("training_iteration", 0)), "error": error or "",
           "trial_dir": trial_dir.name, **running_interval(results)}
    epochs = pd.DataFrame([{k: r.get(k) for k in EPOCH_COLUMNS if k in r} for r in results])
    return row, epochs.assign(trial_id=trial_id)


def running_interval(results: list[dict[str, Any]]) -> dict[str, Any]:
    """When and where the trial ran: unix seconds of its first epoch's start and last report, host
    (Ray's ``timestamp`` and ``hostname`` in every result)."""
    stamped = [r for r in results if isinstance(r.get("timestamp"), (int, float))]
    if not stamped:
        return {"started_at": float("nan"), "ended_at": float("nan"), "node": ""}
    first, last = stamped[0], stamped[-1]
    return {"started_at": first["timestamp"] - float(first.get("time_this_iter_s") or 0.0),
            "ended_at": float(last["timestamp"]), "node": str(last.get("hostname", ""))}


def timing(trials: pd.DataFrame) -> pd.Series:
    """'shared' for a trial that ran while another trial ran on the same host (its wall time and
    latency were measured on a shared machine), 'alone' otherwise, '' when unknown."""
    start, end, node = (trials[c].to_numpy() for c in ("started_at", "ended_at", "node"))
    out = []
    for i in range(len(trials)):
        if pd.isna(start[i]):
            out.append("")
            continue
        # Ray's timestamps are whole seconds: overlaps of 1 s or less are rounding, not sharing
        overlap = (node == node[i]) & (start < end[i] - 1) & (start[i] < end - 1)
        overlap[i] = False
        out.append("shared" if overlap.any() else "alone")
    return pd.Series(out, index=trials.index, dtype=object)


def lost_rows(progress_csv: Path, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """progress.csv's rows of the iterations result.json lacks. Ray 2.60 rewrites a trial's result.json
    from a stale copy when it restarts the trial after a failure, losing the rows reported before the
    failure; progress.csv keeps every row."""
    seen = [r.get("training_iteration") for r in results]
    if results and seen == list(range(1, len(results) + 1)):
        return []  # every iteration is there: nothing to read
    try:
        frame = pd.read_csv(progress_csv)
    except (OSError, ValueError):  # missing, empty or cut short
        return []
    if "training_iteration" not in frame:
        return []
    lost = frame[~frame["training_iteration"].isin(seen)]
    return [{k: v for k, v in row.items() if not (isinstance(v, float) and pd.isna(v))}
            for row in lost.to_dict("records")]


def trial_config(trial_dir: Path, params: dict[str, Any], smoke: bool) -> dict[str, Any]:
    """Every TrainConfig field of a trial: trial_config.json, written by our trainable when the trial
    starts; for a trial that never started, its Ray config resolved the way the trainable would."""
    record = read_json(trial_dir / "trial_config.json")
    if isinstance(record, dict) and isinstance(record.get("config"), dict):
        return record["config"]
    try:
        return trial_values(params, smoke)
    except (ConfigError, KeyError):  # a preset this version does not know: fields as given
        return {**TrainConfig().to_dict(), **{k: v for k, v in params.items() if k in field_names()}}


def stop_reason(ray_status: str | None, last: dict[str, Any], has_error: bool) -> str:
    """Why a trial ended; see the module docstring for the rules."""
    if last.get("status") in FINAL_STATUSES and "epochs_run" in last:
        return last["status"]
    if ray_status == "ERROR" or (ray_status is None and has_error):
        return "errored"
    if ray_status == "TERMINATED":
        return "scheduler_stopped"
    return "unfinished"


def error_message(path: Path) -> str | None:
    """The last non-empty line of Ray's error.txt (the exception), or None without one."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return None
    return lines[-1] if lines else ""


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config dicts as ``outer/inner`` keys, the way Ray names them in progress.csv."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def trials_frame(rows: list[dict[str, Any]], config_columns: tuple[str, ...]) -> pd.DataFrame:
    """Rows in a fixed column order: identity, config, then metrics as they came."""
    first = ["trial_id", "phase", "stop_reason", "ray_status", *config_columns]
    last = ["last_epoch", "error", "trial_dir", "started_at", "ended_at", "node", "timing"]
    frame = pd.DataFrame(rows, columns=None if rows else [*first, *last])
    frame["timing"] = timing(frame) if rows else pd.Series(dtype=object)
    frame = frame.reindex(columns=[*frame.columns, *(c for c in SUMMARY_COLUMNS if c not in frame)])
    middle = [c for c in frame.columns if c not in first and c not in last]
    return frame[[c for c in first if c in frame] + middle + last].reset_index(drop=True)


def epochs_frame(curves: list[pd.DataFrame]) -> pd.DataFrame:
    """All trials' epochs; a resumed trial's repeated epoch keeps its latest report."""
    frame = pd.concat([c for c in curves if len(c.columns) > 1] or [pd.DataFrame(columns=["trial_id"])],
                      ignore_index=True)
    if frame.empty:
        return frame
    if "epoch" not in frame:
        frame["epoch"] = frame["training_iteration"]
    frame = frame.drop_duplicates(["trial_id", "epoch"], keep="last")
    return frame[["trial_id", *[c for c in EPOCH_COLUMNS if c in frame]]].reset_index(drop=True)
