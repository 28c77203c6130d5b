"""Group-sequential boundaries: Lan-DeMets alpha spending of the O'Brien-Fleming type, the repeated
confidence intervals they give, and the chance that a question still open settles by the cap.

A question (a contrast between confirm arms, study.questions) is looked at once per look, each time
with the seeds both sides of it ran so far. Its information at a look is the fraction ``t = n / N``
of its seed pairs at the cap N. The two-sided error ``alpha`` is spent over the looks, alpha/2 on
each side, by the O'Brien-Fleming-type function of Lan & DeMets (1983)

    alpha(t) = 2 * (2 - 2 Phi(z_{1 - alpha/4} / sqrt(t)))

and the z boundaries ``c_1, c_2, ...`` solve, look by look, P(|Z_1| < c_1, ..., |Z_{k-1}| < c_{k-1},
|Z_k| >= c_k) = alpha(t_k) - alpha(t_{k-1}) for the standardised statistics of a Brownian motion
observed at t_1 < t_2 < ..., computed by the recursive numerical integration of Armitage, McPherson
& Rowe (1969) as Jennison & Turnbull (2000, ch. 19) describe it. Neither statsmodels nor scipy has
this (docs/ANALYSIS.md); tests/test_sequential.py checks it against the published boundaries.

The looks need not be planned: each boundary depends only on the looks before it (the spending
function does the planning). The *repeated confidence interval* (Jennison & Turnbull 1989) at look k
is ``estimate +- c_k * se``; the sequence of them covers the truth at every look at once with
probability 1 - alpha, whatever rule decides when to look again or stop, so stopping a question once
its interval settles, or for futility, cannot raise the error rate. The variance is unknown and
estimated from the question's own pairs, so the z boundary becomes the t quantile of the same tail
(``t_{n-1}`` at ``Phi(c_k)``), the usual conversion (Jennison & Turnbull 2000, sec. 3.8); the
simulation of docs/ANALYSIS.md checks its coverage.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy import optimize, special, stats

GRID = 32  # grid points per unit of the increments' standard deviation (as J&T ch. 19; 64 agrees to 1e-5)
NO_EXIT = 8.0  # the grid ends at +-8 sd where a boundary lies beyond (the mass outside < 1e-15)


def spent(t: float, alpha: float) -> float:
    """The two-sided error spent by information fraction `t`: alpha/2 a side, each by the one-sided
    O'Brien-Fleming-type function (the symmetric design Jennison & Turnbull tabulate)."""
    if t <= 0:
        return 0.0
    return float(4 * stats.norm.sf(stats.norm.isf(alpha / 4) / math.sqrt(min(t, 1.0))))


def boundaries(times: Sequence[float], alpha: float) -> list[float]:
    """The two-sided z boundaries at information fractions `times` (strictly increasing, in (0, 1]);
    at t = 1 the whole of `alpha` has been spent."""
    return list(_boundaries(tuple(round(float(t), 12) for t in times), float(alpha)))


@lru_cache(maxsize=4096)
def _boundaries(times: tuple[float, ...], alpha: float) -> tuple[float, ...]:
    if any(b <= a for a, b in zip(times, times[1:])) or not times or times[0] <= 0 or times[-1] > 1 + 1e-12:
        raise ValueError(f"information fractions must increase within (0, 1]: {times}")
    out: list[float] = []
    density = grid = None
    for k, t in enumerate(times):
        target = spent(t, alpha) - spent(times[k - 1], alpha) if k else spent(t, alpha)
        if k == 0:
            c = float(stats.norm.isf(target / 2)) if target > 0 else math.inf
            grid = _grid(min(c, NO_EXIT) * math.sqrt(t), math.sqrt(t))
            density = stats.norm.pdf(grid, scale=math.sqrt(t))
        else:
            step = math.sqrt(t - times[k - 1])
            weights = _simpson(grid) * density

            def exit_probability(c: float) -> float:
                edge = c * math.sqrt(t)
                return float(weights @ (stats.norm.cdf((-edge - grid) / step) + stats.norm.sf((edge - grid) / step)))

            c = _solve(exit_probability, target)
            new_grid = _grid(min(c, NO_EXIT) * math.sqrt(t), step)
            kernel = stats.norm.pdf((new_grid[:, None] - grid[None, :]) / step) / step
            density, grid = kernel @ weights, new_grid
        out.append(c)
    return tuple(out)


def _grid(half_width: float, step: float) -> np.ndarray:
    """An odd number of points over [-half_width, half_width], at least GRID per `step`."""
    n = max(101, int(math.ceil(2 * half_width / step * GRID)) | 1)
    return np.linspace(-half_width, half_width, n)


def _simpson(grid: np.ndarray) -> np.ndarray:
    """Simpson's rule weights of an odd, evenly spaced grid."""
    w = np.ones(len(grid))
    w[1:-1:2], w[2:-1:2] = 4, 2
    return w * (grid[1] - grid[0]) / 3


def _solve(exit_probability, target: float) -> float:
    """The boundary at which the chance of first crossing here is `target` (it falls as c rises)."""
    if target <= 0:
        return math.inf
    low, high = 0.0, 37.0  # the normal tail underflows beyond 37 sd
    if exit_probability(high) > target:  # spends less than can be told from nothing: no exit here
        return math.inf
    return float(optimize.brentq(lambda c: exit_probability(c) - target, low, high, xtol=1e-10))


@lru_cache(maxsize=65536)
def t_boundary(z: float, df: int) -> float:
    """The t quantile with the tail of the z boundary `z`, for an estimated variance on `df` degrees."""
    if df < 1 or not math.isfinite(z):
        return math.inf
    return float(stats.t.isf(stats.norm.sf(z), df))


def repeated_interval(estimate: float, sd: float, n: int, times: Sequence[float],
                      alpha: float) -> tuple[float, float, float]:
    """(low, high, the t boundary) of the repeated confidence interval of a mean of `n` pairs (sample
    sd `sd`) at the last of the looks made at information fractions `times`."""
    c = t_boundary(boundaries(times, alpha)[-1], n - 1)
    half = c * sd / math.sqrt(n) if n > 1 else math.inf
    if not math.isfinite(half):
        return -math.inf, math.inf, c
    return estimate - half, estimate + half, c


def chance_to_settle(estimate: float, sd: float, n: int, cap: int, times: Sequence[float],
                     alpha: float, margin: float) -> float:
    """The chance that a question with `n` pairs now settles by the cap of `cap` pairs, one look per
    pair from here, if its true difference and spread are the ones seen (a plug-in conditional power,
    Lan, Simon & Halperin 1982): the final mean is normal around the estimate; it settles when the
    final repeated interval excludes 0 or lies inside +-`margin`."""
    if n >= cap or n < 2 or not math.isfinite(sd):
        return 0.0
    future = [*times, *(m / cap for m in range(n + 1, cap + 1))]
    half = t_boundary(boundaries(future, alpha)[-1], cap - 1) * sd / math.sqrt(cap)
    spread = sd * math.sqrt(cap - n) / cap  # of the final mean, given the pairs so far
    if spread <= 0:
        return 0.0
    def cdf(x: float) -> float:  # of the final mean: normal around the estimate
        return float(special.ndtr((x - estimate) / spread))

    settle = 1 - cdf(half) + cdf(-half)  # the interval excludes 0
    inner = min(margin - half, half)  # ... or, not already counted, lies inside +-margin
    if inner > 0:
        settle += cdf(inner) - cdf(-inner)
    return float(min(settle, 1.0))
