"""The experiment directory's layout: every file a sweep leaves, named, read and written in one place.

The experiment directory is the contract between the sweep (which writes it) and the analysis, the
export and ``--resume`` (which read it), the way Ray Tune keeps its result keys in
``ray/tune/result.py``. Writers and readers import the names from here; it imports only the config
schema, so a trial worker and the analysis both load it without the other's code. (Its content,
sweep.json's object, is what the code calls a *record*.)

``EXP/`` (storage_path/name):

- ``sweep.json`` (:data:`SWEEP_FILE`): what the driver ran: ``plan`` (sweep.planning.plan.Plan), ``params``
  (the space with every override), ``expected_trials``, ``phases`` (``{"screen": {"dir", ...,
  "rungs": [{"dir", "budget", "expected_trials", "arms"}, ...]}, "confirm": {"top", "seeds", "arms",
  ...}}``; ``rungs`` for a successive-halving screen only) and provenance; read by :func:`read_sweep` only;
- ``screen/``, ``confirm/`` (:data:`PHASES`, each phase's ``dir``) and a successive-halving screen's
  later rungs, ``screen-<budget>ep/`` (:func:`phase_directories`): one Ray Tune experiment each;
  inside, per trial, Ray's files and our ``trial_config.json`` (:data:`TRIAL_CONFIG_FILE`, the
  resolved TrainConfig the trial ran), and ``trial_records/<trial_id>.json`` (:data:`RECORDS_DIR`,
  the driver's own copy of every result row, written atomically);
- ``latency_alone.json`` (:data:`LATENCY_FILE`): a multi-objective sweep's front re-measured alone.

A ``train.py`` run directory holds ``config.json`` (:data:`RUN_CONFIG_FILE`) in the same shape as
trial_config.json. A report's directory holds ``trials.csv``/``epochs.csv`` (:data:`FRAMES`) beside
a copy of sweep.json, and is itself loadable.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

from study.config import ConfigError, TrainConfig, UserError, nesting_depth
from study.files import WriteError, write_text_atomically

SWEEP_FILE = "sweep.json"
TRIAL_CONFIG_FILE = "trial_config.json"  # a sweep trial's resolved config (sweep.trainable writes it)
RUN_CONFIG_FILE = "config.json"  # a train.py run's resolved config, in the same shape
CONFIG_RECORDS = (TRIAL_CONFIG_FILE, RUN_CONFIG_FILE)  # what train.py --config DIR re-runs
RECORDS_DIR = "trial_records"  # the driver's own record of every result, one file per trial (sweep.storage)
LATENCY_FILE = "latency_alone.json"  # a multi-objective front's latency measured alone (deploy.latency)
FRAMES = ("trials.csv", "epochs.csv")  # a report's copy of the frames (analysis.report.write_report)

METRIC, MODE = "val_rank", "max"  # the result key ASHA compares at each rung and the searcher maximises
SCREEN, CONFIRM = "screen", "confirm"
PHASES = (SCREEN, CONFIRM)  # a phased experiment's phases, in the order they run
PLAN_KEYS = ("search", "scheduler", "max_t")  # what every reader of a recorded plan relies on
CLASS_PREFIX = "test_acc_class/"  # + a class's name: a trial's per-class test accuracy (a metric and a column)


# ------------------------------------------------------------------------------------ reading
# The deepest record this tool writes nests 8 levels (sweep.json's confirm phase: its looks' seeds per
# arm); one nested deeper was not written by it, and past about 1,000 levels json's decoder (and any
# reader walking the tree after it) ends in a RecursionError.
RECORD_DEPTH = 64


def loads(text: str | bytes) -> Any:
    """json.loads for every record file the tool reads back (sweep.json, a trial's config and result
    lines, the driver's records, Ray's experiment state, train.py's metrics log): a text nested deeper
    than RECORD_DEPTH levels is a ValueError, as any other text that is not a record's JSON, so each
    reader's own handling of a damaged file (skip it, or one line naming it) covers it too."""
    too_deep = ValueError(f"nested deeper than {RECORD_DEPTH} levels")
    try:
        data = json.loads(text)
    except RecursionError:
        raise too_deep from None
    if nesting_depth(data, RECORD_DEPTH) > RECORD_DEPTH:
        raise too_deep
    return data


def read_json(path: Path, kind: type | None = None) -> Any:
    """A JSON file's content, or None when it is missing, unreadable (half written, not UTF-8, nested
    past RECORD_DEPTH) or, given `kind`, of another type (a list where an object belongs)."""
    try:
        data = loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if kind is None or isinstance(data, kind) else None


def json_bytes(path: Path) -> bytes | None:
    """A file's bytes when they are whole JSON (nested no deeper than RECORD_DEPTH), else None: a file a
    kill cut short is not (sweep.storage keeps and puts back Tune's state by it, sweep.trust exempts by it)."""
    try:
        data = Path(path).read_bytes()
        loads(data)
    except (OSError, ValueError):
        return None
    return data


def read_config_record(path: Path) -> dict[str, Any]:
    """The resolved config (the ``config`` object) of a trial_config.json or a train.py run's
    config.json; a UserError naming the file when it is missing, not JSON, or has no config object."""
    try:
        record = loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path} is missing") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} cannot be read ({exc})") from None
    if not isinstance(record, dict):
        raise UserError(f"{path} does not hold a JSON object")
    config = record.get("config")
    if not isinstance(config, dict):
        raise UserError(f"{path} holds no 'config' object")
    return config


def read_trial_config(path: Path) -> TrainConfig:
    """:func:`read_config_record` as a validated TrainConfig (a field this version rejects: one line)."""
    try:
        return TrainConfig.from_dict(read_config_record(path))
    except ConfigError as exc:
        raise UserError(f"{path}: {exc}") from None


def record_path(tune_dir: str | Path, trial_id: str) -> Path:
    """Where the driver keeps its own record of one trial's results (sweep.storage.StorageGuard)."""
    return Path(tune_dir, RECORDS_DIR, f"{trial_id}.json")


def read_result_rows(path: Path) -> list[dict[str, Any]]:
    """The result rows of the driver's record of a trial (written atomically, so whole even when a
    full disk cut Ray's result files short); [] without one."""
    rows = (read_json(path, dict) or {}).get("rows")
    return [row for row in rows if isinstance(row, dict)] if isinstance(rows, list) else []


def read_latency_alone(run_dir: str | Path) -> dict[str, Any] | None:
    """RUN_DIR/latency_alone.json (deploy.latency.remeasure_front), or None without a readable one
    (missing, not JSON, or not of the shape it writes: trial id -> {"latency_ms_b1": number, ...})."""
    try:
        data = loads((Path(run_dir) / LATENCY_FILE).read_text())
    except (OSError, ValueError):
        return None
    trials = data.get("trials") if isinstance(data, dict) else None
    if not (isinstance(trials, dict) and all(
            isinstance(v, dict) and all(is_number(x) for k, x in v.items() if str(k).startswith("latency"))
            for v in trials.values())):
        return None
    return data


def read_sweep(location: str | Path, needs: Iterable[str] = ()) -> dict[str, Any]:
    """sweep.json of the experiment at `location` (a local directory or a pyarrow filesystem URI),
    with one rule for every reader: each part is checked for its shape (:func:`checked_parts`); a part
    the caller `needs` ("plan", "params", ...) that is missing or malformed is a UserError naming the
    file and the part, and any other malformed part is left out. Without needs, a missing or
    unreadable file is {} (an experiment the analysis can read without its record)."""
    needs = tuple(needs)
    record, unreadable = _sweep_record(location)
    if record is None:
        if needs:
            raise UserError(unreadable or f"{location} has no {SWEEP_FILE}: it was not started by sweep/run.py")
        return {}
    checked, wrong = checked_parts(record)
    needs += ("phases",) if needs and "phases" in wrong else ()  # a driver reads every phase it recorded
    missing = [part for part in needs if part not in checked]
    if missing:
        why = "; ".join(wrong.get(part, f"no `{part}`") for part in missing)
        raise UserError(f"{_sweep_file(location)} is not a sweep record this version can read ({why})")
    return checked


def sweep_problems(location: str | Path) -> list[str]:
    """What a reader without needs (:func:`read_sweep`) left out of the experiment's sweep.json, in
    words: [] when it is whole or missing; else the file unreadable, or each malformed part."""
    record, unreadable = _sweep_record(location)
    if record is None:
        return [unreadable] if unreadable else []
    return list(checked_parts(record)[1].values())


def _sweep_file(location: str | Path) -> str:
    return f"{str(location).rstrip('/')}/{SWEEP_FILE}"


def _sweep_record(location: str | Path) -> tuple[dict[str, Any] | None, str | None]:
    """(sweep.json's object, None); (None, None) when there is no file; (None, why) when it cannot be
    read as a sweep record (not JSON, nested too deep, not an object)."""
    where = _sweep_file(location)
    try:
        record = loads(_read_bytes(where))
    except (FileNotFoundError, OSError):
        return None, None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, too deep
        return None, f"{where} is not valid JSON ({exc})"
    if not isinstance(record, dict):
        return None, f"{where} is not a sweep record (a JSON object with `plan` and `params`)"
    return record, None


def checked_parts(record: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(record without its malformed parts, part -> what is wrong with it). Checked: ``plan`` (an
    object with :data:`PLAN_KEYS`), ``params`` (an object),
    ``expected_trials`` (an integer), ``phases`` (each of :data:`PHASES` an object whose ``dir`` is one
    plain directory name, with an integer ``expected_trials`` if any; the driver's other entries, such
    as ``earlier_confirms``, kept as they are; no screen, no phases)."""
    checked, wrong = dict(record), {}
    plan = record.get("plan")
    if "plan" in record:
        if not (isinstance(plan, dict) and all(k in plan for k in PLAN_KEYS)):
            wrong["plan"] = f"`plan` is not an object with {', '.join(PLAN_KEYS)}"
        elif not _objectives(plan.get("objectives")):
            wrong["plan"] = "`plan.objectives` is not a list of [metric, min|max] pairs"
        else:
            checked["plan"] = dict(plan)
    if "design" in record and not isinstance(record["design"], dict):
        wrong["design"] = "`design` is not an object"
    if "params" in record and not isinstance(record["params"], dict):
        wrong["params"] = "`params` is not an object"
    if "expected_trials" in record and not _is_count(record["expected_trials"]):
        wrong["expected_trials"] = "`expected_trials` is not a whole number"
    recorded = record.get("phases")
    phases = {name: spec for name in PHASES if (spec := phase_record(recorded, name))}
    checked.pop("phases", None)
    malformed = [name for name in PHASES if isinstance(recorded, dict) and name in recorded and name not in phases]
    if SCREEN in phases and not malformed:
        checked["phases"] = {**{k: v for k, v in recorded.items() if k not in PHASES}, **phases}
    elif malformed:
        wrong["phases"] = f"`phases.{malformed[0]}` is not as the driver records it"
    elif "phases" in record:
        wrong["phases"] = "`phases` has no screen with a plain `dir`"
    for part in wrong:
        checked.pop(part, None)
    return checked, wrong


def phase_record(phases: Any, name: str) -> dict[str, Any] | None:
    """sweep.json's record of one phase, or None when it has none of the expected shape (its ``dir``
    one plain directory name; a screen's ``rungs``, if any, a list of objects each with a plain
    ``dir`` and a whole ``budget`` >= 1; a confirm phase's seeds, factors and arms, its looks and its
    design); a non-integer trial count is left out (of a rung too)."""
    spec = phases.get(name) if isinstance(phases, dict) else None
    if not (isinstance(spec, dict) and plain_name(spec.get("dir"))):
        return None
    if not _is_count(spec.get("expected_trials", 0)):
        spec = {k: v for k, v in spec.items() if k != "expected_trials"}
    if "rungs" in spec:
        rungs = spec["rungs"]
        if not (isinstance(rungs, list) and rungs and all(
                isinstance(r, dict) and plain_name(r.get("dir")) and _is_count(r.get("budget")) and r["budget"] >= 1
                for r in rungs)):
            return None
        spec = {**spec, "rungs": [r if _is_count(r.get("expected_trials", 0)) else
                                  {k: v for k, v in r.items() if k != "expected_trials"} for r in rungs]}
    if name == CONFIRM and not _confirm_basics(spec):
        return None
    if "looks" in spec and not _looks(spec["looks"], spec.get("arms")):
        return None
    if not _design(spec):
        return None
    return spec


def _confirm_basics(spec: Mapping[str, Any]) -> bool:
    """Whether a confirm phase has what every reader of it indexes, as the driver records it when it
    plans the phase: its fresh ``seeds`` (whole numbers, one or more) and its ``factors`` (names); and
    once chosen, its ``arms`` (objects, each with its ``levels``)."""
    seeds, factors, arms = spec.get("seeds"), spec.get("factors"), spec.get("arms", [])
    return (isinstance(seeds, list) and bool(seeds) and all(_is_count(s) for s in seeds)
            and isinstance(factors, list) and all(isinstance(f, str) for f in factors)
            and isinstance(arms, list) and all(isinstance(a, dict) and isinstance(a.get("levels"), dict) for a in arms))


def _looks(looks: Any, arms: Any) -> bool:
    """Whether a confirm phase's ``looks`` are as the driver records them: a list of objects, each with
    a plain ``dir``, its ``seeds`` (whole numbers, one or more), its ``arms`` (indices of the phase's
    arms) and, if any, its ``cap`` (a whole number >= 1)."""
    count = len(arms) if isinstance(arms, list) else 0
    return isinstance(looks, list) and all(
        isinstance(look, dict) and plain_name(look.get("dir")) and isinstance(look.get("seeds"), list)
        and look["seeds"] and all(_is_count(s) for s in look["seeds"]) and isinstance(look.get("arms"), list)
        and all(_is_count(i) and 0 <= i < count for i in look["arms"])
        and (_is_count(look.get("cap", 1)) and look.get("cap", 1) >= 1) for look in looks)


def _design(spec: Mapping[str, Any]) -> bool:
    """Whether a confirm phase's sequential design, where recorded, is as the driver records it:
    ``max_seeds`` a whole number >= 1, ``declared_after`` (the seeds that ran before its questions were
    declared, for one continued from before they were) a whole number, ``margin`` a positive number,
    ``alpha`` in (0, 1), and
    ``questions`` a list of objects each with a text ``id``, a ``kind``, a positive ``margin`` and
    ``weights`` (arm label -> number)."""
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v == v  # noqa: E731
    questions = spec.get("questions", [])
    return ((_is_count(spec.get("max_seeds", 1)) and spec.get("max_seeds", 1) >= 1)
            and _is_count(spec.get("declared_after", 0))
            and (number(spec.get("margin", 1)) and spec.get("margin", 1) > 0)
            and (number(spec.get("alpha", 0.5)) and 0 < spec.get("alpha", 0.5) < 1)
            and isinstance(questions, list) and all(
                isinstance(q, dict) and isinstance(q.get("id"), str) and q.get("kind") in ("difference", "interaction")
                and number(q.get("margin")) and q["margin"] > 0 and isinstance(q.get("weights"), dict)
                and all(isinstance(a, str) and number(w) for a, w in q["weights"].items()) for q in questions))


def plain_name(name: Any) -> bool:
    """Whether `name` (a phase's directory, a trial id, a trial's directory, read from the experiment's
    own files) names one entry of its directory: never a path that leaves it."""
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name


def inside(base: Path, name: Any) -> bool:
    """Whether `base/name` is a plain name's entry of `base` that, its symbolic links followed, is
    still inside `base`."""
    try:
        return plain_name(name) and (Path(base) / name).resolve().is_relative_to(Path(base).resolve())
    except (OSError, RuntimeError):  # a loop of symbolic links (RuntimeError before Python 3.13)
        return False


def screen_rungs(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rungs of a successive-halving screen (sweep.planning.phases), first to last, from a checked record:
    each ``{"dir", "budget", "expected_trials"?, "arms"?}``; [] for any other screen."""
    return list(phase_specs(record).get(SCREEN, {}).get("rungs", []))


def confirm_looks(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The looks of a sequential confirm phase (study.questions), first to last, from a checked
    record: each ``{"dir", "seeds", "arms" (indices into the phase's arms), "expected_trials"?,
    "answers"? (once assessed)}``; [] for a confirm phase recorded without looks."""
    return list(phase_specs(record).get(CONFIRM, {}).get("looks", []))


def phase_directories(record: Mapping[str, Any]) -> list[tuple[str, str, int | None]]:
    """(phase, directory, step) of every phase directory a checked record names, in order: a
    successive-halving screen's rungs each (step 0, 1, ...: the rung), a sequential confirm phase's
    looks each (step 0, 1, ...: the look), any other phase once (step None)."""
    out: list[tuple[str, str, int | None]] = []
    for name, spec in phase_specs(record).items():
        steps = spec.get("rungs") if name == SCREEN else spec.get("looks")
        out += [(name, r["dir"], i) for i, r in enumerate(steps)] if steps else [(name, spec["dir"], None)]
    return out


def rung_of(record: Mapping[str, Any], directory: str) -> int | None:
    """The index of the screen's rung kept in `directory` (a phase's ``dir``), or None."""
    return next((i for i, rung in enumerate(screen_rungs(record)) if rung["dir"] == directory), None)


def look_of(record: Mapping[str, Any], directory: str) -> int | None:
    """The index of the confirm phase's look kept in `directory`, or None."""
    return next((i for i, look in enumerate(confirm_looks(record)) if look["dir"] == directory), None)


def chosen_confirm(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """sweep.json's ``phases.confirm`` once the screen chose its arms (factors, arms with levels of
    every factor, references of factors only or none), else None."""
    spec = phase_specs(record).get(CONFIRM) or {}
    factors, arms, references = spec.get("factors"), spec.get("arms"), spec.get("references")
    if not (isinstance(factors, list) and factors and isinstance(arms, list) and arms):
        return None
    if not all(isinstance(a, dict) and isinstance(a.get("levels"), dict) and set(factors) <= set(a["levels"])
               for a in arms):
        return None
    if not (references is None or isinstance(references, dict) and set(references) <= set(factors)):
        return None
    return spec


def phase_specs(record: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The phases of :data:`PHASES` a checked sweep record has, in order; {} without phases."""
    recorded = record.get("phases") or {}
    return {name: recorded[name] for name in PHASES if name in recorded}


def expected_trials(record: Mapping[str, Any], phase: str, step: int | None = None) -> int:
    """The trials sweep.json expects of one phase, or of its step `step` (the screen's rung, the
    confirm phase's look; 0 until the driver records them); an experiment recorded before phases keeps
    the screen's count at the top. A successive-halving screen's own count is its first rung's; a
    sequential confirm phase's is its looks' so far."""
    if step is not None:
        steps = screen_rungs(record) if phase == SCREEN else confirm_looks(record)
        return int(steps[step].get("expected_trials", 0)) if step < len(steps) else 0
    if phase == CONFIRM and confirm_looks(record):
        return sum(int(look.get("expected_trials", 0)) for look in confirm_looks(record))
    default = record.get("expected_trials", 0) if phase == SCREEN else 0
    return int(phase_specs(record).get(phase, {}).get("expected_trials", default))


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A JSON number or nothing (None, NaN): never text, a list, an object or a bool."""
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _objectives(value: Any) -> bool:
    """None, or a list of [metric, "min"|"max"] pairs (a multi-objective plan's)."""
    return value is None or (isinstance(value, list) and all(
        isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str) and pair[1] in ("min", "max")
        for pair in value))


# ------------------------------------------------------------------------------------ writing
def write_sweep(location: str, record: Mapping[str, Any]) -> None:
    """sweep.json at the experiment root, whole or not at all, so a driver killed meanwhile never
    leaves half a record: on a local disk through study.files (a temporary file moved into place),
    on a pyarrow filesystem URI (s3://...) written to a temporary name and moved likewise."""
    text = json.dumps(record, indent=2, default=str)
    if "://" not in location:
        try:
            write_text_atomically(Path(location, SWEEP_FILE), text)
        except WriteError as exc:
            raise UserError(f"{exc}; free space or choose a writable --storage-path") from None
        return
    filesystem, path = filesystem_of(location)
    try:
        filesystem.create_dir(path, recursive=True)
        with filesystem.open_output_stream(f"{path}/{SWEEP_FILE}.partial") as out:
            out.write(text.encode())
        filesystem.move(f"{path}/{SWEEP_FILE}.partial", f"{path}/{SWEEP_FILE}")
    except OSError as exc:
        with contextlib.suppress(OSError):
            filesystem.delete_file(f"{path}/{SWEEP_FILE}.partial")
        raise UserError(f"cannot write {SWEEP_FILE} to {location} ({exc.strerror or exc}); "
                        "free space or choose a writable --storage-path") from None


def filesystem_of(location: str):
    """(pyarrow filesystem, path) of a local directory or a URI Ray supports (s3://, gs://, ...)."""
    import pyarrow.fs

    if "://" in location:
        return pyarrow.fs.FileSystem.from_uri(location)
    return pyarrow.fs.LocalFileSystem(), location


def _read_bytes(where: str) -> bytes:
    if "://" not in where:
        return Path(where).read_bytes()
    filesystem, path = filesystem_of(where)
    with filesystem.open_input_stream(path) as stream:
        return stream.read()
