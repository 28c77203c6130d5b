"""What was trained, as the report's first table: data, model, schedule, seeds, machine, per phase.

Every value is read from the trials' own records (their configs as run and their final reports) and
from sweep.json's provenance; where the trials of a phase differ, the distinct values are listed
(with how many trials had each when there are several).
"""
from __future__ import annotations

from typing import Any, Callable

import pandas as pd

from study.load import Experiment

Row = tuple[str, Callable[[pd.DataFrame], str]]


def distinct(values: pd.Series, fmt: Callable[[Any], str] = str) -> str:
    """'3' or '1 (48 trials), 3 (16)': the distinct values in order of first appearance."""
    values = values.dropna()
    if values.empty:
        return "n/a"
    counts = values.map(fmt).value_counts(sort=False)
    if len(counts) == 1:
        return counts.index[0]
    return ", ".join(f"{v} ({n} trial{'s' if n != 1 else ''})" if i == 0 else f"{v} ({n})"
                     for i, (v, n) in enumerate(counts.items()))


def column(name: str, fmt: Callable[[Any], str] = str) -> Callable[[pd.DataFrame], str]:
    return lambda t: distinct(t[name], fmt) if name in t else "n/a"


def images(t: pd.DataFrame) -> str:
    if not {"train_images", "val_images", "test_images"} <= set(t):
        return "n/a"
    rows = t[["train_images", "val_images", "test_images"]].dropna().astype(int)
    return distinct(rows.apply(lambda r: f"{r.iloc[0]:,} train / {r.iloc[1]:,} validation / {r.iloc[2]:,} test",
                               axis=1)) if len(rows) else "n/a"


def schedule(t: pd.DataFrame) -> str:
    if "epochs" not in t:
        return "n/a"
    ft = t["finetune_epochs"] if "finetune_epochs" in t else pd.Series(0, index=t.index)
    words = [f"{int(e)} epoch{'s' if int(e) != 1 else ''}" + (f" + {int(f)} fine-tuning" if f and f > 0 else "")
             for e, f in zip(t["epochs"], ft.fillna(0))]
    return distinct(pd.Series(words, index=t.index))


def seeds(t: pd.DataFrame) -> str:
    if "seed" not in t:
        return "n/a"
    values = sorted(pd.to_numeric(t["seed"], errors="coerce").dropna().astype(int).unique())
    return ", ".join(map(str, values)) if len(values) <= 8 else f"{len(values)} seeds, {values[0]}..{values[-1]}"


def execution(t: pd.DataFrame) -> str:
    parts = [t[c].astype(str) for c in ("device", "precision_used") if c in t]
    if not parts:
        return "n/a"
    words = parts[0] + (" " + parts[1] if len(parts) > 1 else "")
    if "threads" in t:
        words = words + ", " + t["threads"].map(lambda n: f"{int(n)} thread{'s' if int(n) != 1 else ''}"
                                                if pd.notna(n) else "threads n/a")
    return distinct(words)


def trial_time(t: pd.DataFrame) -> str:
    if "time_total_s" not in t:
        return "n/a"
    s = pd.to_numeric(t["time_total_s"], errors="coerce").dropna()
    if s.empty:
        return "n/a"
    shared = ""
    if "timing" in t and (t["timing"] == "shared").any():
        shared = "; other trials shared the machine"
    return f"median {s.median():.0f} s (range {s.min():.0f} to {s.max():.0f}){shared}"


ROWS: list[Row] = [
    ("dataset", lambda t: distinct(t.apply(lambda r: f"{r['dataset']} at {int(r['image_size'])}x{int(r['image_size'])}"
                                           if pd.notna(r.get("image_size")) else str(r["dataset"]), axis=1))
     if "dataset" in t else "n/a"),
    ("images", images),
    ("subset", column("subset", lambda v: "all" if int(v) == 0 else f"{int(v):,}")),
    ("model", column("model")),
    ("width", column("width", lambda v: f"{float(v):g}")),
    ("batch size", column("batch_size", lambda v: str(int(v)))),
    ("schedule", schedule),
    ("seeds", seeds),
    ("device", execution),
    ("time per trial", trial_time),
]


def trained_table(exp: Experiment) -> pd.DataFrame:
    """One row per quantity, one column per phase (or 'trials' without phases)."""
    views = {name: exp.phase(name).trials for name in exp.phases} if exp.phases else {"trials": exp.trials}
    table = pd.DataFrame({"what": [name for name, _ in ROWS],
                          **{phase: [fn(t) if len(t) else "n/a" for _, fn in ROWS] for phase, t in views.items()}})
    return table


def machine(sweep: dict[str, Any]) -> str:
    """'host vm, Intel Xeon ... (2 CPUs), no CUDA device; torch 2.13.0, Python 3.11.7, git abc123'."""
    if not sweep:
        return "no sweep.json: the machine is not recorded"
    parts = [f"host {sweep['host']}" if sweep.get("host") else None,
             (f"{sweep['cpu']}" + (f" ({sweep['cpus']} CPUs)" if sweep.get("cpus") else "")) if sweep.get("cpu") else None,
             f"CUDA device {sweep['cuda_device']}" if sweep.get("cuda_device") else "no CUDA device on the driver",
             f"torch {(sweep.get('versions') or {}).get('torch')}" if (sweep.get("versions") or {}).get("torch") else None,
             f"Python {sweep['python']}" if sweep.get("python") else None,
             f"git {str(sweep['git_revision'])[:12]}" if sweep.get("git_revision") else None]
    return ", ".join(p for p in parts if p)


TEXT = ("Read from each trial's config as run and its final report; where a phase's trials differ, each value "
        "is listed with its trial count. Driver: {machine}.")
