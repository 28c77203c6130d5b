"""Which trials learned anything: the check that keeps models at chance from passing as findings.

A trial *learned* when its best validation accuracy is shown above chance + MARGIN points: chance is
100 / classes percent, and the test is one-sided and exact (scipy.stats.binomtest: the trial's
correct validation images out of its `val_images` against a rate of chance + MARGIN, alpha
ALPHA). A trial whose validation accuracy is not shown above that did not learn; so a small
validation set is not enough to call a trial at 16% with chance at 10% a learner. An **arm at
chance** is one whose every ended trial did not learn; an arm with some seeds that learned keeps all
of them (a seed that failed is part of that arm's spread). Trials without `val_images` (frames from
before it was recorded) or without a validation accuracy are not tested and count as learned.

Torch-free, so the sweep's console and the report apply the same check. The report leaves arms at
chance out of the screen's effects, interactions, importance, front and
figures of the compared trials (a contrast with such an arm measures a failure to learn, not a size
of effect: counted and named in the text), lists them in their own table with the opposite test too (p_at_chance:
accuracy shown *below* chance + MARGIN, Holm over the table), whose verdict says whether the arm is
shown to stay at chance or is only not shown to learn; it says so at its top when most arms did not
learn, and marks confirm arms at chance; the console says it with the best arm. Picking the best epoch of each trial favours
"learned", so the check errs towards keeping a trial.

A trial's loss **exploded** when an epoch's mean training loss is finite but above EXPLODED times
ln(classes), the cross-entropy of a uniform guess: such a trial is not stopped (a NaN/inf loss is, as
diverged) and may recover, but the console and the report say it (:func:`exploded`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from study.config import KNOWN_SIZES
from study.layout import CLASS_PREFIX
from study.significance import ALPHA

MARGIN = 5.0  # points above chance a trial must be shown to exceed
# the columns of an arms_at_chance table besides the factors
NUMBERS = ("n", "best_val_acc", "chance", "val_images", "p_learned", "p_at_chance", "p_at_chance_holm")


def chance(trials: pd.DataFrame) -> pd.Series:
    """Chance accuracy (percent) of each trial: 100 / its dataset's classes, from the dataset's known
    size, else from how many per-class test accuracies it reported; NaN where neither says."""
    per_class = [c for c in trials.columns if str(c).startswith(CLASS_PREFIX)]
    counted = trials[per_class].notna().sum(axis=1) if per_class else pd.Series(0, index=trials.index)
    datasets = trials["dataset"] if "dataset" in trials else pd.Series(None, index=trials.index)
    classes = [KNOWN_SIZES[d][2] if d in KNOWN_SIZES else (n or np.nan) for d, n in zip(datasets, counted)]
    if "classes" in trials:  # recorded with the final metrics (an image folder's classes are known from it only)
        classes = pd.to_numeric(trials["classes"], errors="coerce").fillna(pd.Series(classes, index=trials.index))
    return 100.0 / pd.Series(classes, index=trials.index, dtype=float)


EXPLODED = 10.0  # times ln(classes), the training loss of a uniform guess


def uniform_loss(classes: float) -> float:
    """The cross-entropy of a uniform guess over `classes` (ln 10 = 2.30 for ten classes)."""
    return float(np.log(classes)) if classes and classes > 1 else float("nan")


def loss_exploded(loss: float, classes: float) -> bool:
    return bool(np.isfinite(loss) and loss > EXPLODED * uniform_loss(classes))


def exploded(trials: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """The trials whose training loss exploded: trial_id, the first such epoch, its train_loss, the
    uniform guess's loss and the ratio; empty when none did."""
    columns = ["trial_id", "epoch", "train_loss", "uniform_loss", "times"]
    if epochs.empty or "train_loss" not in epochs or trials.empty:
        return pd.DataFrame(columns=columns)
    uniform = (100.0 / chance(trials)).map(uniform_loss)
    frame = epochs.assign(uniform_loss=epochs["trial_id"].map(dict(zip(trials["trial_id"], uniform))),
                          train_loss=pd.to_numeric(epochs["train_loss"], errors="coerce"))
    hit = frame[np.isfinite(frame["train_loss"]) & (frame["train_loss"] > EXPLODED * frame["uniform_loss"])]
    first = hit.sort_values("epoch", kind="stable").groupby("trial_id", sort=False).head(1)
    first = first.assign(times=first["train_loss"] / first["uniform_loss"])
    order = {t: i for i, t in enumerate(trials["trial_id"])}
    return first.sort_values("trial_id", key=lambda s: s.map(order))[columns].reset_index(drop=True)


def exploded_line(table: pd.DataFrame) -> str:
    """'The training loss exploded in 2 trials (...): a1 at epoch 1 (216, 94 times ...); ...' or ''."""
    if table.empty:
        return ""
    said = "; ".join(f"`{row['trial_id']}` at epoch {int(row['epoch'])} ({row['train_loss']:.3g}, "
                     f"{row['times']:.0f} times)" for row in table.head(8).to_dict("records"))
    more = f"; and {len(table) - 8} more" if len(table) > 8 else ""
    n = len(table)
    return (f"The training loss exploded in {n} trial{'s' if n != 1 else ''} (an epoch's mean training loss above "
            f"{EXPLODED:g} times ln(classes), the loss of a uniform guess; not stopped, as a NaN loss is): "
            f"{said}{more}. "
            "A lower lr, gradient clipping (clip_grad_norm) or a warm-up usually keeps it down.")


def tests(trials: pd.DataFrame) -> pd.DataFrame:
    """Per trial: chance (%), the floor chance + MARGIN, p_learned (exact binomial test of its best
    validation accuracy > the floor) and p_at_chance (the same test of < the floor); NaN where a trial
    cannot be tested (module docstring)."""
    acc = pd.to_numeric(trials.get("best_val_acc", pd.Series(np.nan, index=trials.index)), errors="coerce")
    n = pd.to_numeric(trials.get("val_images", pd.Series(np.nan, index=trials.index)), errors="coerce")
    level = chance(trials)
    rows = []
    for a, k, c in zip(acc, n, level):
        floor = c + MARGIN
        if not (np.isfinite(a) and np.isfinite(k) and k >= 1 and np.isfinite(c)) or floor >= 100:
            rows.append((c, floor, np.nan, np.nan))
            continue
        correct, k = int(round(a / 100 * k)), int(k)
        rows.append((c, floor, binomtest(correct, k, floor / 100, alternative="greater").pvalue,
                     binomtest(correct, k, floor / 100, alternative="less").pvalue))
    return pd.DataFrame(rows, index=trials.index, columns=["chance", "floor", "p_learned", "p_at_chance"])


def learned(trials: pd.DataFrame) -> pd.Series:
    """Per trial: True unless its best validation accuracy is not shown above chance + MARGIN (module
    docstring); True where it cannot be tested."""
    p = tests(trials)["p_learned"]
    return (p.isna() | (p < ALPHA)).astype(bool)


def arms_at_chance(trials: pd.DataFrame, factors: Sequence[str]) -> pd.DataFrame:
    """The arms (factor levels) none of whose trials learned: n trials, their highest best validation
    accuracy, chance, val_images, p_learned (the arm's smallest: its best trial's evidence of
    learning), p_at_chance (its largest: every trial shown below chance + MARGIN needs all to reject)
    and p_at_chance_holm (Holm over the table, statsmodels); no rows when every arm learned."""
    from statsmodels.stats.multitest import multipletests

    factors = [f for f in factors if f in trials]
    columns = [*factors, *NUMBERS]
    if trials.empty:
        return pd.DataFrame(columns=columns)
    frame = pd.concat([trials.assign(best_val_acc=pd.to_numeric(trials["best_val_acc"], errors="coerce")),
                       tests(trials)[["p_learned", "p_at_chance"]]], axis=1)
    frame["_learned"] = frame["p_learned"].isna() | (frame["p_learned"] < ALPHA)
    frame["_chance"] = chance(trials)
    keys = factors or ["_arm"]
    if not factors:
        frame["_arm"] = "(one arm)"
    if "val_images" not in frame:
        frame["val_images"] = np.nan
    table = frame.groupby(keys, sort=False, dropna=False).agg(
        n=("_learned", "size"), any_learned=("_learned", "any"), best_val_acc=("best_val_acc", "max"),
        chance=("_chance", "first"), val_images=("val_images", "min"), p_learned=("p_learned", "min"),
        p_at_chance=("p_at_chance", "max")).reset_index()
    table = table[~table["any_learned"]].drop(columns=["any_learned", "_arm"], errors="ignore").reset_index(drop=True)
    table["p_at_chance_holm"] = (multipletests(table["p_at_chance"], method="holm")[1] if len(table) else [])
    return table[columns]


def check(trials: pd.DataFrame, factors: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame, str, int]:
    """(the trials of the arms that learned, the arms at chance, a sentence for the report ('' when
    every arm learned), the arms checked)."""
    factors = [f for f in factors if f in trials]
    arms = len(trials[factors].drop_duplicates()) if factors else min(len(trials), 1)
    at_chance = arms_at_chance(trials, factors)
    if at_chance.empty:
        return trials, at_chance, "", arms
    if factors:
        keys = set(map(tuple, at_chance[factors].astype(object).to_numpy().tolist()))
        learned = ~trials[factors].astype(object).apply(tuple, axis=1).isin(keys)
    else:
        learned = pd.Series(False, index=trials.index)
    return trials[learned], at_chance, sentence(at_chance, factors, arms, int((~learned).sum())), arms


def sentence(at_chance: pd.DataFrame, factors: Sequence[str], arms: int, trials: int,
             left_out: str = "left out") -> str:
    """'3 of 48 arms did not learn (no trial's best validation accuracy is shown above chance (10%) + 5
    points by ...) and their 9 trials are left out: attention=simple residual=none; ...' (`left_out`:
    the words for where they are left out of, the console's 'left out of the report's effects')."""
    level = chance_words(at_chance)
    names = "; ".join(" ".join(f"{f}={row[f]}" for f in factors) or "(one arm)"
                      for row in at_chance.head(8).to_dict("records"))
    more = f"; and {len(at_chance) - 8} more" if len(at_chance) > 8 else ""
    return (f"{len(at_chance)} of {arms} arm{'s' if arms != 1 else ''} did not learn (no trial's best validation "
            f"accuracy is shown above {level} + {MARGIN:g} points by a one-sided exact binomial test, alpha "
            f"{ALPHA:g}; study.learning) and their {trials} trial{'s are' if trials != 1 else ' is'} {left_out}: "
            f"{names}{more}")


def chance_words(frame: pd.DataFrame) -> str:
    """'chance (10%)', or 'chance' when the arms' chance levels differ or are unknown."""
    levels = frame["chance"].dropna().unique() if "chance" in frame else []
    return f"chance ({levels[0]:.3g}%)" if len(levels) == 1 else "chance"


def most_did_not_learn(at_chance: pd.DataFrame, arms: int) -> bool:
    return arms > 0 and len(at_chance) > arms / 2
