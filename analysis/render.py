"""Tables out: numeric DataFrames to Markdown (for reading), CSV and LaTeX (for papers).

Markdown shows ``x_mean``/``x_std`` pairs as one ``mean ± std`` column, parameters in millions and
FLOPs in billions; CSV and LaTeX keep the numeric frame as it is.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from study.files import write_text_atomically

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FORMATS = ("md", "csv", "tex")
UNITS = {"params": ("params_M", 1e-6), "flops": ("GFLOPs", 1e-9)}
SIGNIFICANT = ("params_M", "GFLOPs", "params_m", "gflops")  # shown with 3 significant digits


def readable(table: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """A copy for reading: mean ± std pairs merged, big counts scaled, floats rounded."""
    out = table.copy()
    for column, (name, scale) in UNITS.items():
        if column in out:
            out[column] = out[column] * scale
            out = out.rename(columns={column: name})
    for column in [c for c in out.columns if str(c).endswith("_mean")]:
        stem = column[: -len("_mean")]
        if f"{stem}_std" in out:
            spec = ".3g" if stem in SIGNIFICANT else f".{digits}f"
            merged = [mean_std(m, s, spec) for m, s in zip(out[column], out[f"{stem}_std"])]
            position = out.columns.get_loc(column)
            out = out.drop(columns=[column, f"{stem}_std"])
            out.insert(position, f"{stem} (mean ± std)", merged)
    return out


def mean_std(mean: float, std: float, spec: str = ".2f") -> str:
    """'81.23 ± 0.40'; the std is left out when undefined (n = 1), everything when n = 0."""
    if pd.isna(mean):
        return ""
    if not pd.isna(std) and abs(std) <= 1e-9 * max(abs(mean), 1.0):
        std = 0.0  # equal values whose float sum left a trace (1.7e-17)
    return f"{mean:{spec}}" + ("" if pd.isna(std) else f" ± {std:{spec}}")


def to_markdown(table: pd.DataFrame, digits: int = 2) -> str:
    """A GitHub-flavoured Markdown table (tabulate), NaN shown as empty; params and FLOPs with 3
    significant digits (a tiny smoke-test network has 0.0004 GFLOPs)."""
    if table.empty:
        return "_(no rows)_"
    out = readable(table, digits)
    cells = pd.DataFrame({c: [p_value(v) if is_p_value(c) else cell(v, ".3g" if c in SIGNIFICANT else f".{digits}f")
                              for v in out[c]] for c in out.columns})
    align = ["right" if pd.api.types.is_numeric_dtype(out[c]) and not pd.api.types.is_bool_dtype(out[c])
             or str(c).endswith("(mean ± std)") else "left" for c in out.columns]
    return cells.to_markdown(index=False, disable_numparse=True, colalign=align)


def is_p_value(column: object) -> bool:
    name = str(column)
    return name == "p" or name.startswith("p_") or "_p_" in name or name.endswith("_p")


def p_value(value: object) -> str:
    """A p-value as a reader expects it: 2 significant digits (3 near 0.05, so that 0.0498 and 0.0502
    do not both read 0.05), '<0.001' below that, empty for NaN."""
    if value is None or pd.isna(value):
        return ""
    if value < 0.001:
        return "<0.001"
    return f"{value:.3g}" if 0.045 <= value < 0.055 else f"{value:.2g}"


def interval(row) -> str:
    """' [low, high]' of a row's 95% interval (ci_low, ci_high), '' when it has none."""
    low = row.get("ci_low", math.nan)
    return "" if low is None or pd.isna(low) else f" [{low:.2f}, {row['ci_high']:.2f}]"


def cell(value: object, spec: str) -> str:
    """One value as text: floats with `spec`, NaN/None empty, anything else as str()."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return format(value, spec) if isinstance(value, (float, np.floating)) else str(value)


def write_table(table: pd.DataFrame, path_stem: Path, fmt: str, digits: int = 2) -> Path:
    """`table` as ``path_stem.csv`` (full precision) or ``.tex`` (booktabs tabular, escaped) or
    ``.md``; returns the file written."""
    path = path_stem.with_suffix(f".{fmt}")
    if fmt == "csv":
        write_text_atomically(path, table.to_csv(index=False))
    elif fmt == "tex":
        write_text_atomically(path, table.to_latex(index=False, escape=True, float_format=f"%.{digits}f", na_rep="--"))
    else:
        write_text_atomically(path, to_markdown(table, digits) + "\n")
    return path


@dataclass
class Section:
    """A report block: Markdown text, optionally a table (saved as `name`) and a figure."""
    title: str
    text: str = ""
    name: str = ""
    table: pd.DataFrame | None = None
    figure: Figure | None = None
