"""The significance level of every test the tool makes, its default equivalence margin, and the family
adjustment of its verdicts.

One level for the report's tests (effects, contrasts, equivalence, the confirm phase) and for the
learning check that the console and the report share: ALPHA, two-sided unless a test says
otherwise. A table of tests is one family; :func:`holm` adjusts it (Holm 1979, statsmodels'
``multipletests``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from statsmodels.stats.multitest import multipletests

ALPHA = 0.05
# Accuracy points within which two arms count as equivalent (TOST, the confirm phase's questions) and
# below which a change "did not help" (the recipe verdict), unless --margin says otherwise.
EQUIVALENCE_MARGIN = 0.5


def holm(p: pd.Series) -> pd.Series:
    """Holm-adjusted p-values of one family; NaN (untestable) entries stay NaN and are not counted."""
    out = pd.Series(np.nan, index=p.index, dtype=float)
    valid = p.notna()
    if valid.any():
        out[valid] = multipletests(p[valid].to_numpy(float), alpha=ALPHA, method="holm")[1]
    return out
