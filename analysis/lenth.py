"""Lenth's method for an unreplicated factorial (Lenth 1989, Technometrics 31(4)): which of its
orthogonal contrasts stand out from the noise, with no replicate and no assumption about which
interactions are zero.

A balanced full factorial with one trial per arm (the default screen's first rung: 48 arms, one
seed) has N - 1 orthogonal contrasts. Each factor is coded by Helmert contrasts (a level against the
mean of the levels before it, in the reference-first order) and every interaction by their products
(patsy ``C(f, Helmert)``, full interaction); in a balanced design these columns are mutually
orthogonal, and scaled to unit length each estimate ``c_j = x_j . y / |x_j|`` has the variance of
one trial, sigma^2, whatever the column. Under effect sparsity (most contrasts are noise), Lenth's
pseudo standard error estimates sigma from them:

    s0 = 1.5 * median |c_j|;  PSE = 1.5 * median { |c_j| : |c_j| < 2.5 s0 }

and a contrast is *active* when |c_j| exceeds the margin of error ME = t(0.975; d) * PSE, or, as a
family over all m = N - 1 contrasts, the simultaneous margin SME = t(gamma; d) * PSE with
gamma = (1 + 0.95^(1/m)) / 2, both on d = m / 3 degrees of freedom (Lenth's approximation). The
half-normal plot shows the sorted |c_j| against half-normal quantiles, with both margins.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import patsy
from scipy import stats

COLUMNS = ["contrast", "order", "estimate", "abs_estimate", "active", "active_simultaneous"]


@dataclass(frozen=True)
class Lenth:
    table: pd.DataFrame  # COLUMNS, largest |estimate| first
    pse: float
    me: float
    sme: float
    df: float
    m: int  # contrasts

    @property
    def note(self) -> str:
        active = self.table[self.table["active_simultaneous"]]["contrast"].tolist()
        return (f"m = {self.m} orthogonal contrasts, PSE = {self.pse:.3g}, d = {self.df:.3g} df; ME = {self.me:.3g}, "
                f"SME = {self.sme:.3g} (in the unit-length contrasts' scale: one trial's standard deviation); "
                + (f"beyond SME: {', '.join(active)}" if active else "none beyond SME"))


def unreplicated(frame: pd.DataFrame, factors: Sequence[str]) -> bool:
    """One trial per arm of a full factorial of `factors` (each with 2 or more levels)."""
    if not factors or any(frame[f].nunique() < 2 for f in factors):
        return False
    cells = frame.groupby(list(factors), dropna=False).size()
    return len(cells) == int(np.prod([frame[f].nunique() for f in factors])) and (cells == 1).all()


def lenth(frame: pd.DataFrame, factors: Sequence[str], metric: str, references: dict) -> Lenth | None:
    """Lenth's method (module docstring) on an unreplicated full factorial; None for any other
    design, fewer than 7 contrasts (too few for a median of the noise), or a median contrast of 0."""
    data = frame.dropna(subset=[metric]).reset_index(drop=True)
    if not unreplicated(data, factors) or len(data) - 1 < 7:
        return None
    levels = {f: [references[f], *[v for v in dict.fromkeys(data[f]) if v != references[f]]] for f in factors}
    coded = pd.DataFrame({f"f{i}": pd.Categorical(data[f].astype(str), [str(v) for v in levels[f]])
                          for i, f in enumerate(factors)})
    design = patsy.dmatrix(" * ".join(f"C(f{i}, Helmert)" for i in range(len(factors))), coded)
    x = np.asarray(design)[:, 1:]  # no intercept
    y = data[metric].to_numpy(float)
    estimates = x.T @ y / np.linalg.norm(x, axis=0)
    names = [label(name, factors, levels) for name in design.design_info.column_names[1:]]
    order = [name.count(":") + 1 for name in design.design_info.column_names[1:]]
    m = len(estimates)
    absolute = np.abs(estimates)
    s0 = 1.5 * np.median(absolute)
    if s0 == 0:  # half the contrasts exactly 0 (a constant metric): no noise to estimate
        return None
    pse = 1.5 * np.median(absolute[absolute < 2.5 * s0])
    df = m / 3
    me = stats.t.ppf(0.975, df) * pse
    sme = stats.t.ppf((1 + 0.95 ** (1 / m)) / 2, df) * pse
    table = pd.DataFrame({"contrast": names, "order": order, "estimate": estimates, "abs_estimate": absolute,
                          "active": absolute > me, "active_simultaneous": absolute > sme})
    table = table.sort_values("abs_estimate", ascending=False, kind="stable").reset_index(drop=True)
    return Lenth(table[COLUMNS], float(pse), float(me), float(sme), float(df), m)


def label(column: str, factors: Sequence[str], levels: dict) -> str:
    """patsy's 'C(f0, Helmert)[H.channel]:C(f1, Helmert)[H.holistic]' (a column names its level) as
    'attention channel vs (none, simple) × recipe holistic vs baseline'."""
    parts = []
    for part in column.split(":"):
        i = int(part[part.index("(f") + 2:part.index(",")])
        factor = factors[i]
        j = [str(v) for v in levels[factor]].index(part[part.index("[H.") + 3:part.rindex("]")])
        before = [str(v) for v in levels[factor][:j]]
        against = before[0] if len(before) == 1 else f"({', '.join(before)})"
        parts.append(f"{factor} {levels[factor][j]} vs {against}")
    return " × ".join(parts)
