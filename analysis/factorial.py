"""Effects from a factorial model: estimated marginal means over a designed grid, seeds as blocks.

The estimand of a *main effect* of factor F, level l against its reference r, is the difference of
estimated marginal means (EMMs; Searle, Speed & Milliken 1980 "population marginal means"; R's
emmeans): the mean over every cell of the other factors, each cell weighted equally, of
``mu(F=l, cell) - mu(F=r, cell)``. A *conditional effect* does the same within one recipe, and the
*interaction* with the recipe is the difference of two conditional effects. None of them pools
trials the way a difference of raw level means does, so an unbalanced design (an errored trial, a
missing seed) does not shift them.

The model is ordinary least squares (statsmodels) with the seed as an additive block, since a seed
fixes the split, data order and augmentation of every arm::

    metric ~ C(f1) * C(f2) * ... * C(fk) + C(seed)

i.e. a free mean per arm (cell), and the residual variance is the arm-by-seed scatter (homoscedastic:
one variance for every arm). Each contrast is a linear combination of the coefficients, built by
averaging the design rows of the reference grid (every combination of levels x every seed) and
tested with ``OLSResults.t_test`` (t with the residual degrees of freedom). When whole cells are
missing, the per-arm means of those cells are not estimable; the model then drops to all two-way
interactions, then to main effects only (assuming the dropped interactions are zero), and says so
and names the missing cells. With no residual degrees of freedom (one trial per arm) or a residual
variance of 0, no interval and no p-value is given.

Multiplicity: each table is one family per column of p-values, adjusted by study.significance.holm
(statsmodels' ``multipletests(method="holm")``, Holm 1979); only rows that survive it are called
significant.
"""
from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Sequence

import numpy as np
import pandas as pd
import patsy
import statsmodels.api as sm

from study.significance import ALPHA

CONFIDENCE = 1 - ALPHA
SEED = "seed"
MODELS = ("full factorial", "two-way interactions", "main effects only")


@dataclass
class FactorialFit:
    """A fitted factorial model, with what it assumed and left out (see the module docstring)."""
    fit: object  # statsmodels RegressionResults (design matrix built by patsy from the formula)
    factors: list[str]
    levels: dict[str, list]  # per factor, its levels in order, reference first
    grid: pd.DataFrame  # the reference grid: every level combination x every seed, original values
    grid_design: np.ndarray  # its design rows
    model: str  # one of MODELS
    blocked: bool  # seeds entered as blocks
    n: int  # trials the model was fitted on
    missing_cells: list[dict] = field(default_factory=list)  # level combinations with no trial
    metric: str = "test_acc"
    projector: np.ndarray | None = None  # pinv(X) @ X: a contrast c is estimable iff c @ projector == c
    counts: dict[str, dict] = field(default_factory=dict)  # per factor and level, trials fitted
    data: pd.DataFrame | None = None  # the trials fitted (factors, seed, metric): per-contrast variances
    pooled_interactions: bool = False  # unreplicated: the 3- to k-way interactions are the error (assumed 0)

    @cached_property
    def by_seed(self) -> tuple[pd.DataFrame, pd.Series, dict]:
        """(the metric per seed (rows) and cell (columns, by cell number), each trial's cell number,
        the number of each cell (a tuple of the factors' levels)): what a per-contrast variance is
        computed from. Without a seed column each trial is its own row."""
        data = self.data
        cells = list(data[self.factors].itertuples(index=False, name=None))
        ids = {c: i for i, c in enumerate(dict.fromkeys(cells))}
        cell = pd.Series([ids[c] for c in cells], index=data.index)
        seeds = data[SEED] if SEED in data else pd.Series(range(len(data)), index=data.index)
        table = (pd.DataFrame({"cell": cell, "seed": seeds, "y": data[self.metric].astype(float)})
                 .pivot_table(index="seed", columns="cell", values="y", aggfunc="mean"))
        return table, cell, ids

    @property
    def df_resid(self) -> float:
        return float(self.fit.df_resid)

    @property
    def has_error_variance(self) -> bool:
        return self.df_resid > 0 and float(self.fit.scale) > 1e-12

    def describe(self) -> str:
        """One paragraph: the model, n, residual df, missing cells; printed above the tables."""
        terms = " × ".join(self.factors) if self.model == MODELS[0] else " + ".join(self.factors)
        text = (f"OLS of {self.metric} on {terms} ({self.model})" + (" + seed as a block" if self.blocked else "")
                + f"; n = {self.n} trials, residual df = {self.df_resid:g}")
        if self.missing_cells:
            shown = "; ".join(", ".join(f"{k}={v}" for k, v in cell.items()) for cell in self.missing_cells[:5])
            more = f" and {len(self.missing_cells) - 5} more" if len(self.missing_cells) > 5 else ""
            text += (f". {len(self.missing_cells)} arm(s) have no trial ({shown}{more}): their means come "
                     f"from the {self.model} model, which assumes the higher-order interactions are 0")
        if self.pooled_interactions:
            text += (f". One trial per arm leaves no replicate error: the three- to {len(self.factors)}-way "
                     f"interactions are pooled as the error (assumed 0, the sparsity of effects; a real one "
                     f"widens the intervals), residual df = {self.df_resid:g}")
        if not self.has_error_variance:
            text += (". No residual variance (one trial per arm, or identical values): effects are shown "
                     "without intervals or p-values; run more seeds (--samples)")
        return text


def fit_factorial(frame: pd.DataFrame, factors: Sequence[str], metric: str,
                  references: dict[str, object]) -> FactorialFit:
    """Fit the richest model of the module docstring whose per-factor contrasts are all estimable."""
    data = frame.dropna(subset=[metric]).reset_index(drop=True)
    levels = {f: [references[f], *[v for v in dict.fromkeys(data[f]) if v != references[f]]] for f in factors}
    seeds = sorted(data[SEED].unique()) if SEED in data else []
    blocked = len(seeds) > 1
    coded = encode(data, factors, levels, seeds if blocked else [])
    cells = pd.DataFrame(list(itertools.product(*levels.values())), columns=list(factors))
    present = data[list(factors)].drop_duplicates().astype(str)
    missing = cells.astype(str).merge(present, how="left", indicator=True)["_merge"] == "left_only"
    grid = cells.merge(pd.DataFrame({SEED: seeds or [0]}), how="cross")
    grid_coded = encode(grid, factors, levels, seeds if blocked else [])
    for model in MODELS:
        design_matrix = patsy.dmatrix(terms(len(factors), model) + (" + C(s)" if blocked else ""), coded)
        x = np.asarray(design_matrix)
        with warnings.catch_warnings():  # a rank-deficient design (missing arms) is checked just below
            warnings.simplefilter("ignore")
            fit = sm.OLS(data[metric].to_numpy(float), x).fit()
        design = np.asarray(patsy.build_design_matrices([design_matrix.design_info], grid_coded)[0])
        candidate = FactorialFit(fit, list(factors), levels, grid, design, model, blocked, len(data),
                                 cells[missing.to_numpy()].to_dict("records"), metric, np.linalg.pinv(x) @ x,
                                 {f: {lv: int((data[f] == lv).sum()) for lv in levels[f]} for f in factors},
                                 data[[*factors, *([SEED] if SEED in data else []), metric]])
        if all(estimable(candidate, contrast(candidate, f, lv)) for f in factors for lv in levels[f][1:]):
            break
    if (candidate.model == MODELS[0] and candidate.df_resid == 0 and not candidate.missing_cells
            and len(factors) >= 3 and not blocked):
        return pool_interactions(candidate, coded, grid_coded)
    return candidate


POOLED_MIN_DF = 5  # fewer error df than this from pooling gives intervals too wide to be worth printing


def pool_interactions(full: FactorialFit, coded: pd.DataFrame, grid_coded: pd.DataFrame) -> FactorialFit:
    """An unreplicated full factorial (one trial per arm) of 3 or more factors refitted with main
    effects and two-way interactions only: the three- to k-way interactions' sums of squares become
    the error (Montgomery, Design and Analysis of Experiments, 6.5), when that leaves POOLED_MIN_DF
    or more degrees of freedom; else `full` (no intervals)."""
    design_matrix = patsy.dmatrix(terms(len(full.factors), MODELS[1]), coded)
    x = np.asarray(design_matrix)
    fit = sm.OLS(full.data[full.metric].to_numpy(float), x).fit()
    if fit.df_resid < POOLED_MIN_DF:
        return full
    design = np.asarray(patsy.build_design_matrices([design_matrix.design_info], grid_coded)[0])
    return replace(full, fit=fit, grid_design=design, model=MODELS[1], projector=np.linalg.pinv(x) @ x,
                   pooled_interactions=True)


def encode(frame: pd.DataFrame, factors: Sequence[str], levels: dict, seeds: list) -> pd.DataFrame:
    """Factors as categoricals named f0..fk (any column name works in a formula), the seed as s."""
    coded = pd.DataFrame({f"f{i}": pd.Categorical(frame[f].astype(str), [str(v) for v in levels[f]])
                          for i, f in enumerate(factors)})
    if seeds:
        coded["s"] = pd.Categorical(frame[SEED].astype(str), [str(s) for s in seeds])
    return coded


def terms(k: int, model: str) -> str:
    names = [f"C(f{i})" for i in range(k)]
    if model == MODELS[0]:
        return " * ".join(names)
    if model == MODELS[1] and k > 1:
        return f"({' + '.join(names)}) ** 2"
    return " + ".join(names)


def estimable(ff: FactorialFit, vector: np.ndarray) -> bool:
    """A contrast is estimable when it lies in the row space of the design (Searle 1971, 5.4)."""
    return bool(np.allclose(vector @ ff.projector, vector, atol=1e-8 * max(1.0, np.abs(vector).max())))


def emm_weights(ff: FactorialFit, factor: str, level: object, where: dict | None = None) -> dict[tuple, float]:
    """Per cell (a tuple of the factors' levels), its weight in EMM(factor=level) - EMM(factor=reference)
    over the cells matching `where` (e.g. {"recipe": "holistic"}), every cell weighted equally."""
    cells = [dict(zip(ff.factors, values)) for values in itertools.product(*ff.levels.values())]
    cells = [c for c in cells if all(c[k] == v for k, v in (where or {}).items())]
    at = [tuple(c.values()) for c in cells if c[factor] == level]
    ref = [tuple(c.values()) for c in cells if c[factor] == ff.levels[factor][0]]
    weights = dict.fromkeys(at + ref, 0.0)
    for cell in at:
        weights[cell] += 1 / len(at)
    for cell in ref:
        weights[cell] -= 1 / len(ref)
    return weights


def cells_vector(ff: FactorialFit, weights: dict[tuple, float]) -> np.ndarray:
    """Coefficient vector of the contrast ``sum_cell weights[cell] * mean(cell)``: each cell's mean is
    its design rows of the reference grid averaged over the seeds."""
    rows: dict[tuple, list[int]] = {}
    for i, cell in enumerate(ff.grid[ff.factors].itertuples(index=False, name=None)):
        rows.setdefault(cell, []).append(i)
    return sum((w * ff.grid_design[rows[cell]].mean(0) for cell, w in weights.items() if w),
               np.zeros(ff.grid_design.shape[1]))


def contrast(ff: FactorialFit, factor: str, level: object, where: dict | None = None) -> np.ndarray:
    """Coefficient vector of EMM(factor=level) - EMM(factor=reference) over the cells that match
    `where`, with equal weight (:func:`emm_weights`)."""
    return cells_vector(ff, emm_weights(ff, factor, level, where))


def marginal_mean(ff: FactorialFit, factor: str, level: object) -> float:
    """EMM of `factor` at `level`: the model's mean over every cell of the other factors and seeds."""
    return float(ff.grid_design[(ff.grid[factor] == level).to_numpy()].mean(0) @ np.asarray(ff.fit.params))


@dataclass(frozen=True)
class Estimate:
    effect: float
    se: float
    ci_low: float
    ci_high: float
    p: float  # two-sided, H0: effect = 0
    t: float


def estimate(ff: FactorialFit, vector: np.ndarray) -> Estimate:
    """The contrast's estimate, standard error, 95% t interval and p (NaN without error variance)."""
    if not estimable(ff, vector):
        return Estimate(np.nan, np.nan, np.nan, np.nan, np.nan, np.nan)
    effect = float(vector @ np.asarray(ff.fit.params))
    if not ff.has_error_variance:
        return Estimate(effect, np.nan, np.nan, np.nan, np.nan, np.nan)
    test = ff.fit.t_test(vector[None, :])
    low, high = np.asarray(test.conf_int(alpha=ALPHA))[0]
    return Estimate(effect, float(np.squeeze(test.sd)), float(low), float(high), float(np.squeeze(test.pvalue)),
                    float(np.squeeze(test.tvalue)))
