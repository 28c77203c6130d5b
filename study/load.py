"""An experiment directory -> an :class:`Experiment`: two tidy frames, one row per trial and one row
per trial-epoch, with what the driver recorded.

The files are the experiment directory's (:mod:`study.layout` names them; :mod:`study.ray_files`
reads Ray Tune's). A *phased* experiment (screen, then confirm: sweep.json's ``phases``) keeps each
phase's trials in its own Ray Tune experiment directory below it (``screen/``, ``confirm/``, without
their own sweep.json); :func:`load` reads every phase that exists into one pair of frames, the
trials frame's ``phase`` column saying which ("screen" for every trial of an experiment without
phases), and :meth:`Experiment.phase` gives one phase's view (a successive-halving screen's view
holds every rung's trials, the ``rung`` column saying which, 0 first; a sequential confirm phase's
view holds every look's, the ``look`` column saying which). The top sweep.json's plan is the
screen's. A report's directory (trials.csv, epochs.csv and sweep.json) loads as the experiment it
describes.

Why a trial ended is its ``stop_reason`` (:func:`study.states.stop_reason`; study.states.ended says
which trials ran to their own end, the one rule every table and the best trial use). In the epochs
frame, ``train_phase`` is the training loop's phase of the epoch (main or finetune).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from study import layout
from study.config import TrainConfig, UserError, field_names, field_types
from study.layout import CLASS_PREFIX, PHASES
from study.ray_files import DirectoryRead, flatten, is_experiment, read_directory
from study.states import STOP_REASONS
from study.trial import BUNDLES

EPOCH_COLUMNS = ("epoch", "training_iteration", "train_phase", "lr", "last_lr", "train_loss", "train_acc", "val_loss",
                 "val_acc", "best_val_acc", "best_epoch", "images_per_sec", "epoch_time_s",
                 "elapsed_s", "status", "time_total_s")
# Always present in the trial frame (NaN where a trial has no final report yet).
SUMMARY_COLUMNS = ("epochs_run", "best_val_acc", "final_val_acc", "test_acc", "test_loss", "params",
                   "flops", "size_mb", "latency_ms_b1", "latency_ms_b256", "wall_time_s", "elapsed_s",
                   "time_total_s")
# Text columns of the trials frame that are not TrainConfig fields (CSV gives NaN for their empty cells).
TEXT_COLUMNS = ("trial_id", "phase", "stop_reason", "ray_status", "error", "trial_dir", "node", "timing")


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
    def references(self) -> dict[str, Any]:
        """The reference levels of a user model's toggles (its factory's defaults), as sweep.json
        recorded them; {} for the built-in models (TrainConfig's defaults are theirs)."""
        levels = self.sweep.get("reference_levels")
        return dict(levels) if isinstance(levels, dict) else {}

    @property
    def phases(self) -> dict[str, dict[str, Any]]:
        """sweep.json's phases of :data:`PHASES` (name -> {"dir", "expected_trials", ...}); {} for an
        experiment without phases (written before screen-then-confirm, or a phase's own view)."""
        return layout.phase_specs(self.sweep)

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
        ``confirm_follows`` (its test accuracy is not to be shown). A screen of several rungs is every
        rung's trials, with the sweep's ``rungs`` and the expected trials of the rungs chosen so far (a
        confirm phase of several looks likewise, with its ``looks``); its path stays the experiment's,
        its ``trial_dir`` relative to it. Without phases, "screen" is the whole experiment."""
        if name not in PHASES:
            raise ValueError(f"unknown phase {name!r}: one of {', '.join(PHASES)}")
        if not self.phases:
            keep = self.trials["phase"] == name
            return replace(self, trials=self.trials[keep].reset_index(drop=True),
                           epochs=self.epochs[self.epochs["trial_id"].isin(self.trials["trial_id"][keep])])
        spec = self.phases.get(name, {"dir": name})
        view = {k: v for k, v in self.sweep.items() if k not in ("phases", "expected_trials")
                and (k != "plan" or name == layout.SCREEN)}
        rungs = spec.get("rungs" if name == layout.SCREEN else "looks", [])
        if rungs:  # every rung's (look's) trials that sweep.json expects so far
            view["expected_trials"] = sum(r.get("expected_trials", 0) for r in rungs)
            view["rungs" if name == layout.SCREEN else "looks"] = rungs
        elif "expected_trials" in spec:
            view["expected_trials"] = spec["expected_trials"]
        if name == layout.SCREEN and layout.CONFIRM in self.phases:
            view["confirm_follows"] = True
        trials = self.trials[self.trials["phase"] == name].reset_index(drop=True)
        # a view of one directory is that directory; a phase of several stays at the root
        dirs = [r["dir"] for r in rungs] if len(rungs) > 1 else [spec["dir"]]
        if "trial_dir" in trials and len(dirs) == 1:  # relative to the view's path
            trials["trial_dir"] = trials["trial_dir"].astype(str).str.removeprefix(f"{spec['dir']}/")
        return Experiment(self.path / spec["dir"] if len(dirs) == 1 else self.path, trials,
                          self.epochs[self.epochs["trial_id"].isin(trials["trial_id"])].reset_index(drop=True),
                          self.config_columns, view,
                          tuple(s for s in self.skipped if any(s.startswith(f"{d}/") for d in dirs)))


def load(run_dir: str | Path) -> Experiment:
    """Read `run_dir` (Ray's ``storage_path/name``) into an :class:`Experiment`: every phase of a
    phased experiment; a phase's own directory as that phase's view of the whole."""
    path = Path(run_dir).expanduser()
    if not path.is_dir():
        raise ExperimentError(f"{path} is not a directory")
    sweep = layout.read_sweep(path)
    if is_frames(path, sweep):
        return with_later_steps(read_frames(path, sweep))
    parent = {} if sweep else layout.read_sweep(path.parent)
    for name, directory, _ in layout.phase_directories(parent):
        if directory == path.name:
            return load(path.parent).phase(name)
    smoke = bool(sweep.get("plan", {}).get("smoke", False))
    read = ([read_directory(path / directory, name, f"{directory}/", smoke, step)
             for name, directory, step in layout.phase_directories(sweep) if (path / directory).is_dir()]
            if layout.phase_specs(sweep) else [read_directory(path, layout.SCREEN, "", smoke)])
    if not any(part.state for part in read) and not sweep:
        inside = sorted(d.name for d in path.iterdir() if d.is_dir() and is_experiment(d))
        hint = f"; experiments inside: {', '.join(inside)}" if inside else "; pass STORAGE/NAME"
        raise ExperimentError(f"{path} is not a Ray Tune experiment directory (no experiment_state-*.json, "
                              f"sweep.json or trial directories){hint}")
    return from_reads(path, [without_odd_numbers(part) for part in read], sweep)


def with_later_steps(frames: Experiment) -> Experiment:
    """A report's frames with the trials of the phase directories beside them that the frames do not
    hold yet: the later looks of a confirm phase continued from the report (sweep/run.py --confirm
    REPORT_DIR --max-seeds N trains them there)."""
    path, sweep = frames.path, frames.sweep
    known = set(frames.trials["trial_dir"].astype(str).str.split("/").str[0]) if "trial_dir" in frames.trials else set()
    smoke = bool((sweep.get("plan") or {}).get("smoke", False))
    read = [without_odd_numbers(read_directory(path / directory, name, f"{directory}/", smoke, step))
            for name, directory, step in layout.phase_directories(sweep)
            if directory not in known and (path / directory).is_dir()]
    if not any(part.rows for part in read):
        return frames
    later = from_reads(path, read, sweep)
    columns = tuple(dict.fromkeys((*frames.config_columns, *later.config_columns)))
    trials = pd.concat([frames.trials, later.trials], ignore_index=True)
    epochs = pd.concat([frames.epochs, later.epochs], ignore_index=True)
    return replace(frames, trials=trials, epochs=epochs, config_columns=columns,
                   skipped=(*frames.skipped, *later.skipped))


def without_odd_numbers(part: DirectoryRead) -> DirectoryRead:
    """`part` without the trials whose row (its config, its final metrics) or result rows hold
    something other than a number where the analysis computes with one (a damaged or foreign
    result.json or trial_config.json): each such trial is named among the skipped, with the key and value."""
    numeric = {*NUMERIC_TRIAL_COLUMNS, *(f for f, kind in field_types().items() if kind in (int, float))}
    in_results = {*(c for c in EPOCH_COLUMNS if c not in TEXT_EPOCH_COLUMNS), *SUMMARY_COLUMNS}
    kept = DirectoryRead(part.state, skipped=list(part.skipped))
    for row, results in zip(part.rows, part.results):
        odd = next(((f"trial_config.json or result.json: {key}", value) for key, value in row.items()
                    if (key in numeric or str(key).startswith(CLASS_PREFIX)) and not layout.is_number(value)), None)
        odd = odd or next(((f"result.json: {key}", value) for result in results for key, value in result.items()
                           if key in in_results and not layout.is_number(value)), None)
        if odd:
            kept.skipped.append(f"{row['trial_dir'].rsplit('/', 1)[0] + '/' if '/' in row['trial_dir'] else ''}"
                                f"{row['trial_id']} ({odd[0]} holds {odd[1]!r}, not a number)")
            continue
        kept.rows.append(row)
        kept.results.append(results)
    return kept


def from_reads(path: Path, read: list[DirectoryRead], sweep: dict[str, Any]) -> Experiment:
    """The Experiment of the phases' directory reads: config columns are TrainConfig's fields, then
    the bundle keys the trials' Ray configs hold."""
    bundle_keys = dict.fromkeys(k for part in read for info in part.state.values()
                                for k in flatten(info["config"]) if k not in field_names())
    config_columns = (*field_names(), *bundle_keys)
    curves = [epoch_rows(results, row["trial_id"]) for part in read for row, results in zip(part.rows, part.results)]
    return Experiment(path, trials_frame([row for part in read for row in part.rows], config_columns),
                      epochs_frame(curves), config_columns, sweep, tuple(what for part in read for what in part.skipped))


def is_frames(path: Path, sweep: dict[str, Any]) -> bool:
    """Whether `path` holds the frames a report wrote (trials.csv, epochs.csv, sweep.json) rather than
    an experiment: no Ray state, no phase directory."""
    return (all((path / name).is_file() for name in layout.FRAMES) and not any(path.glob("experiment_state-*.json"))
            and not any((path / spec["dir"]).is_dir() for spec in layout.phase_specs(sweep).values()))


ADDED_FIELDS = ("evaluate_test",)  # TrainConfig fields younger than frames a report may have written


def read_frames(path: Path, sweep: dict[str, Any]) -> Experiment:
    """The experiment a report's frames describe (trials.csv, epochs.csv and sweep.json, as
    analysis.report writes them beside report.md): the analysis again without the trial directories."""
    trials_csv, epochs_csv = layout.FRAMES
    try:
        trials = pd.read_csv(path / trials_csv)
        epochs = pd.read_csv(path / epochs_csv)
    except (OSError, ValueError) as exc:
        raise ExperimentError(f"{path}: cannot read its frames ({type(exc).__name__}: {exc})") from None
    for name in ADDED_FIELDS:  # frames written before the field existed: every trial ran with its default
        if name not in trials:
            trials[name] = getattr(TrainConfig(), name)
    missing = [c for c in ("trial_id", "phase", "stop_reason", *field_names()) if c not in trials]
    if missing or "trial_id" not in epochs:
        raise ExperimentError(f"{path}: {trials_csv}/{epochs_csv} are not a report's frames (missing "
                              f"{', '.join(missing) or 'trial_id in ' + epochs_csv})")
    check_frames(path, trials, epochs)
    text = [c for c in (*TEXT_COLUMNS, *(f for f, kind in field_types().items() if kind is str)) if c in trials]
    trials[text] = trials[text].astype(object).where(trials[text].notna(), "")
    named = (*(sweep.get("params") or {}), *BUNDLES)  # the bundle keys (stage, recipe) and any other axis
    bundles = list(dict.fromkeys(c for c in named if c not in field_names() and c in trials))
    return Experiment(path, trials, epochs, (*field_names(), *bundles), sweep)


# The frames' columns that hold numbers (besides the numeric TrainConfig fields and the per-class
# accuracies): a report's frames hold nothing else in them, so text there is a damaged file.
NUMERIC_TRIAL_COLUMNS = (*SUMMARY_COLUMNS, "rung", "look", "classes", "train_images", "val_images", "test_images", "last_epoch",
                         "started_at", "ended_at", "best_epoch", "train_loss", "train_acc", "val_loss", "val_acc")
TEXT_EPOCH_COLUMNS = ("trial_id", "train_phase", "status")


def check_frames(path: Path, trials: pd.DataFrame, epochs: pd.DataFrame) -> None:
    """One ExperimentError naming the file, the column and the first bad value, where a report's
    frames hold text in a number's column or a stop reason or phase this version never writes (the
    analysis would end in a TypeError, ValueError or KeyError further on). Numeric columns are made
    numbers in place (a column of whole numbers with empty cells reads as text otherwise)."""
    trials_csv, epochs_csv = layout.FRAMES
    numeric = [*NUMERIC_TRIAL_COLUMNS, *(f for f, kind in field_types().items() if kind in (int, float)),
               *(c for c in trials if str(c).startswith(CLASS_PREFIX))]
    for name, frame, columns in ((trials_csv, trials, numeric),
                                 (epochs_csv, epochs, [c for c in epochs if c not in TEXT_EPOCH_COLUMNS])):
        for column in dict.fromkeys(c for c in columns if c in frame):
            values = pd.to_numeric(frame[column], errors="coerce")
            bad = frame[column].notna() & values.isna()
            if bad.any():
                row = int(bad.to_numpy().argmax())
                raise ExperimentError(f"{path / name}: column {column} holds {frame[column].iloc[row]!r} (row "
                                      f"{row + 2}), not a number: not a frame a report wrote, or a damaged one")
            frame[column] = values
    for column, parts in (("trial_id", 1), ("trial_dir", 2)):  # names the tools join to paths: never out of it
        names = trials[column].dropna().astype(str) if column in trials else pd.Series(dtype=str)
        odd = names[~names.map(lambda name: 0 < len(name.split("/")) <= parts
                               and all(layout.plain_name(part) for part in name.split("/")))]
        if len(odd):
            raise ExperimentError(f"{path / trials_csv}: column {column} holds {odd.iloc[0]!r}, which leads out "
                                  "of the experiment's directory: not a frame a report wrote")
    for column, allowed in (("stop_reason", STOP_REASONS), ("phase", layout.PHASES)):
        odd = trials[column].notna() & ~trials[column].isin(allowed)
        if odd.any():
            raise ExperimentError(f"{path / trials_csv}: column {column} holds {trials[column][odd].iloc[0]!r}, "
                                  f"not one of {', '.join(allowed)}")


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


def trials_frame(rows: list[dict[str, Any]], config_columns: tuple[str, ...]) -> pd.DataFrame:
    """Rows in a fixed column order: identity, config, then metrics as they came."""
    first = ["trial_id", "phase", "rung", "look", "stop_reason", "ray_status", *config_columns]
    last = ["last_epoch", "error", "trial_dir", "started_at", "ended_at", "node", "timing"]
    frame = pd.DataFrame(rows, columns=None if rows else [*first, *last])
    frame["timing"] = timing(frame) if rows else pd.Series(dtype=object)
    frame = frame.reindex(columns=[*frame.columns, *(c for c in SUMMARY_COLUMNS if c not in frame)])
    middle = [c for c in frame.columns if c not in first and c not in last]
    return frame[[c for c in first if c in frame] + middle + last].reset_index(drop=True)


def epoch_rows(results: list[dict[str, Any]], trial_id: str) -> pd.DataFrame:
    """One trial's result rows as its epochs (the columns of :data:`EPOCH_COLUMNS` it has)."""
    return pd.DataFrame([{k: r.get(k) for k in EPOCH_COLUMNS if k in r} for r in results]).assign(trial_id=trial_id)


def epochs_frame(curves: list[pd.DataFrame]) -> pd.DataFrame:
    """All trials' epochs; a resumed trial's repeated epoch keeps its latest report. Without any (every
    trial errored before its first report) an empty frame with every column a reader may index."""
    reported = [c for c in curves if len(c.columns) > 1]
    if not reported:
        return pd.DataFrame(columns=["trial_id", *EPOCH_COLUMNS])
    frame = pd.concat(reported, ignore_index=True)
    if "epoch" not in frame:
        frame["epoch"] = frame["training_iteration"]
    frame = frame.drop_duplicates(["trial_id", "epoch"], keep="last")
    return frame[["trial_id", *[c for c in EPOCH_COLUMNS if c in frame]]].reset_index(drop=True)
