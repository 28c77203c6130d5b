"""Ray Tune 2.60's files of one experiment directory, read as they lie on disk (no Ray cluster,
nothing unpickled), so a finished, interrupted or still-running experiment reads alike:

- ``experiment_state-*.json``: each trial's id, Ray status (PENDING, RUNNING, PAUSED, TERMINATED,
  ERROR), config and directory; the newest file (by name, Ray's rule) wins. A killed driver leaves
  it as of its last save;
- per trial directory: ``result.json`` (one JSON line per ``tune.report``, i.e. per epoch),
  ``progress.csv`` (the same rows as CSV), ``params.json`` (the Ray config), ``trial_config.json``
  (the resolved TrainConfig, by our trainable) and ``error.txt`` for errored trials;
- ``trial_records/<trial_id>.json``: the driver's own copy of every result (rows Ray's files lack;
  sweep.storage).

Each trial becomes one row (dict: id, stop reason, config, last metrics) and its list of result
rows; :mod:`study.load` makes the frames. A file not as Ray writes it skips that trial, named.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from study import layout
from study.config import ConfigError, TrainConfig, UserError, field_names
from study.states import stop_reason
from study.trial import trial_values

# Keys of the last result that are not trial-level columns: Ray's bookkeeping (`done` too, as Ray
# overwrites ours), per-epoch values, and `lr`, which would clash with the config field.
NOT_SUMMARY_KEYS = ("done", "config", "timestamp", "checkpoint_dir_name", "date", "time_this_iter_s",
                    "pid", "hostname", "node_ip", "time_since_restore", "iterations_since_restore",
                    "trial_id", "training_iteration", "epoch", "status", "phase", "train_phase", "lr")
RENAMED = {"precision": "precision_used"}  # the final report's precision clashes with the config field
STEPS = {layout.SCREEN: "rung", layout.CONFIRM: "look"}  # what a phase's numbered directories are
TRIAL_ID = re.compile(r"_([0-9a-f]{5}_\d{5})(?:_|$)")


@dataclass
class DirectoryRead:
    """One Ray Tune experiment directory as read: its state, each trial's row (with its phase) and
    result rows, and the trials whose files could not be read ("prefix/trial_id (why)")."""
    state: dict[str, dict[str, Any]]
    rows: list[dict[str, Any]] = field(default_factory=list)
    results: list[list[dict[str, Any]]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def read_directory(path: Path, phase: str, prefix: str, smoke: bool, step: int | None = None) -> DirectoryRead:
    """Every trial of one Ray Tune experiment directory, its rows marked with `phase` (and `step`: the
    screen's ``rung`` under successive halving, the confirm phase's ``look`` when it has looks), their
    ``trial_dir`` relative to the experiment (`prefix`: the phase's directory and a slash)."""
    read = DirectoryRead(with_unsaved_trials(read_state(path), path))
    for trial_id, info in sorted(read.state.items(), key=lambda item: str(item[0])):
        if not (layout.plain_name(trial_id) and layout.inside(path, info["relative_logdir"])):
            read.skipped.append(f"{prefix}{trial_id!r} (its trial id or directory {info['relative_logdir']!r} in "
                                f"the experiment's files is not a name inside {path}: not read)")
            continue
        try:
            row, results = read_trial(path / info["relative_logdir"], trial_id, info, smoke)
        except (ValueError, TypeError, KeyError, AttributeError, OSError) as exc:  # files not as Ray writes them
            read.skipped.append(f"{prefix}{trial_id} ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''})")
            continue
        read.rows.append({**row, "phase": phase, **({STEPS[phase]: step} if step is not None else {}),
                          "trial_dir": prefix + row["trial_dir"]})
        read.results.append(results)
    return read


def with_unsaved_trials(state: dict[str, dict[str, Any]], path: Path) -> dict[str, dict[str, Any]]:
    """Add trials whose directory exists (with params.json) but that the saved state does not list:
    the driver was killed before it saved them, or no state was ever saved."""
    state = dict(state)
    for trial_dir in path.iterdir():
        found = TRIAL_ID.search(trial_dir.name)
        if found and found.group(1) not in state and (trial_dir / "params.json").is_file():
            state[found.group(1)] = {"status": None,
                                     "config": layout.read_json(trial_dir / "params.json", dict) or {},
                                     "relative_logdir": trial_dir.name}
    return state


def is_trial_dir(path: Path) -> bool:
    """Whether `path` is a Ray Tune trial's directory: named with a trial id, holding its params.json
    (a params.json alone, in a directory of any name, is not one)."""
    return bool(TRIAL_ID.search(path.name)) and (path / "params.json").is_file()


def is_experiment(path: Path) -> bool:
    return (path / layout.SWEEP_FILE).is_file() or any(path.glob("experiment_state-*.json"))


def read_state(path: Path) -> dict[str, dict[str, Any]]:
    """trial_id -> {status, config, relative_logdir} from the newest readable experiment_state-*.json.

    Newest by Ray's own rule (``_find_newest_experiment_checkpoint``: the greatest file name, which
    ends in the session's start time, ``%Y-%m-%d_%H-%M-%S``), never by the file's modification time:
    a resumed run writes a new file, while the first run's file can carry a later timestamp (a
    late flush, a copy). A file that cannot be read (cut short by a kill or a full disk) gives way to
    the next."""
    files = sorted(path.glob("experiment_state-*.json"), key=lambda p: p.name, reverse=True)
    data = next((d for d in (layout.read_json(f, dict) for f in files) if d is not None), None)
    trials = {}
    entries = (data or {}).get("trial_data", [])
    for entry in entries if isinstance(entries, list) else []:
        try:
            info = layout.loads(entry[0]) if isinstance(entry, list) else entry
            trials[info["trial_id"]] = {"status": info.get("status"),
                                        "config": info.get("config") if isinstance(info.get("config"), dict) else {},
                                        "relative_logdir": info.get("relative_logdir") or info["trial_id"]}
        except (ValueError, TypeError, KeyError, AttributeError, IndexError):
            continue  # an entry not as Ray writes it: the trial may still be found by its directory
    return trials


def read_results(path: Path) -> list[dict[str, Any]]:
    """result.json's lines; a line cut short by a killed process is skipped."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    results = []
    for line in lines:
        try:
            row = layout.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            results.append(row)
    return results


def read_trial(trial_dir: Path, trial_id: str, info: dict[str, Any],
               smoke: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One trial's row (config, stop reason, final metrics) and its result rows, by iteration."""
    results = read_results(trial_dir / "result.json")
    results += lost_rows(trial_dir / "progress.csv", results)
    seen = {r.get("training_iteration") for r in results}
    results += [r for r in layout.read_result_rows(layout.record_path(trial_dir.parent, trial_id))
                if r.get("training_iteration") not in seen]
    results.sort(key=lambda r: r.get("training_iteration") or 0)
    last = results[-1] if results else {}
    params = flatten(layout.read_json(trial_dir / "params.json", dict) or info["config"])
    config = {**params, **trial_config(trial_dir, params, smoke)}
    error = error_message(trial_dir / "error.txt")
    metrics = {RENAMED.get(k, k): v for k, v in last.items() if k not in NOT_SUMMARY_KEYS}
    row = {"trial_id": trial_id, "stop_reason": stop_reason(info["status"], last, error),
           "ray_status": info["status"] or "", **config, **metrics,
           "last_epoch": last.get("epoch", last.get("training_iteration", 0)), "error": error or "",
           "trial_dir": trial_dir.name, **running_interval(results)}
    return row, results


def running_interval(results: list[dict[str, Any]]) -> dict[str, Any]:
    """When and where the trial ran: unix seconds of its first epoch's start and last report, host
    (Ray's ``timestamp`` and ``hostname`` in every result)."""
    stamped = [r for r in results if isinstance(r.get("timestamp"), (int, float))]
    if not stamped:
        return {"started_at": float("nan"), "ended_at": float("nan"), "node": ""}
    first, last = stamped[0], stamped[-1]
    return {"started_at": first["timestamp"] - float(first.get("time_this_iter_s") or 0.0),
            "ended_at": float(last["timestamp"]), "node": str(last.get("hostname", ""))}


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
    """Every TrainConfig field of a trial: its trial_config.json, written by our trainable when the
    trial starts; for a trial that never started (or whose record is unreadable), its Ray config
    resolved the way the trainable would."""
    try:
        return layout.read_config_record(trial_dir / layout.TRIAL_CONFIG_FILE)
    except UserError:
        pass
    try:
        return trial_values(params, smoke)
    except (ConfigError, KeyError):  # a preset this version does not know: fields as given
        return {**TrainConfig().to_dict(), **{k: v for k, v in params.items() if k in field_names()}}


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
