"""How far to trust the screen: how well its ranking predicted the confirm phase's, and,
for a screen that judged trials mid-schedule (continuation ASHA), where each schedule stood when it
judged them.

ASHA continues a trial from its checkpoint, so a schedule that depends on the total budget (OneCycle,
cosine, step, warm-up, a fine-tuning phase at the end) is judged at its first rung part-way through:
a OneCycle trial near its peak learning rate is compared with a constant-rate one at its end of
nothing. :func:`schedules_at_rung` says, per schedule, how far through it was and its learning rate
there as a share of its peak.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

FIDELITY_FLOOR = 0.5  # a screen whose ranking agrees less with the confirmed means is flagged


@dataclass(frozen=True)
class Fidelity:
    """How well the screen ranked the arms it sent on, judged by the confirm phase: Spearman's rank
    correlation (``scipy.stats.spearmanr``) between the screen's ranking of the confirmed arms and
    their confirmed mean test accuracy, over the n confirmed arms with both. +1: the screen ordered
    them as their final accuracy does; 0: no better than chance. It judges the confirmed arms only:
    an arm the screen dropped is never seen again, so a high value does not show the cut was right.
    Its p value (a test of no association) is shown, not adjusted; with few arms rho is imprecise."""
    rho: float
    p: float
    n: int

    @property
    def lines(self) -> list[str]:
        """The console's and the report's words: the figure, then a warning below FIDELITY_FLOOR."""
        if self.n < 3 or np.isnan(self.rho):
            why = f"{self.n} confirmed arm(s) with a screen rank" if self.n < 3 else "tied values"
            return [f"screen fidelity: not measured ({why}; Spearman's rank correlation needs 3 or more distinct)"]
        lines = [f"screen fidelity: Spearman {self.rho:+.2f} between the screen's ranking and the confirmed mean test "
                 f"accuracy (n = {self.n} arms, p = {self.p:.2g})"]
        if self.rho < FIDELITY_FLOOR:
            lines.append(f"warning: the screen ranked the confirmed arms poorly (Spearman {self.rho:+.2f} < "
                         f"{FIDELITY_FLOOR}): arms it dropped may be as good; confirm more of them (--confirm DIR "
                         "--confirm-top K) or screen longer (more --epochs, a later --grace-period)")
        return lines


def fidelity(screen_rank: pd.Series, confirmed_mean: pd.Series) -> Fidelity:
    """:class:`Fidelity` of the screen's rank of each arm (1 = best) against its confirmed mean, both
    indexed by the arm; arms without both are left out."""
    paired = pd.concat([screen_rank.rename("rank"), confirmed_mean.rename("mean")], axis=1, join="inner").dropna()
    if len(paired) < 3 or paired["rank"].nunique() < 2 or paired["mean"].nunique() < 2:  # rho undefined
        return Fidelity(float("nan"), float("nan"), len(paired))
    rho, p = spearmanr(-paired["rank"], paired["mean"])
    return Fidelity(float(rho), float(p), len(paired))


SCHEDULE_COLUMNS = ["scheduler", "trials", "epochs", "rung", "share_done", "lr_share_median", "lr_share_min",
                    "lr_share_max"]


def schedules_at_rung(trials: pd.DataFrame, epochs: pd.DataFrame, rung: int) -> pd.DataFrame:
    """Per schedule of the screen (its ``recipe`` preset when the space has one, its scheduler and
    planned main epochs): the trials that reached epoch `rung`, the share of their main schedule done
    there (``rung / epochs``), and their learning rate at that epoch as a share of their peak (the
    configured ``lr``: OneCycle's and the warm-ups' maximum), median and range over the trials."""
    keys = ["recipe"] if "recipe" in trials and trials["recipe"].astype(str).str.len().gt(0).any() else []
    lr_at = epochs[epochs["epoch"] == rung].drop_duplicates("trial_id").set_index("trial_id")["lr"]
    frame = trials.assign(lr_share=trials["trial_id"].map(lr_at) / pd.to_numeric(trials["lr"]))
    frame = frame[frame["lr_share"].notna()]
    if frame.empty:
        return pd.DataFrame(columns=[*keys, *SCHEDULE_COLUMNS])
    table = (frame.groupby([*keys, "scheduler", "epochs"], sort=False)["lr_share"]
             .agg(trials="size", lr_share_median="median", lr_share_min="min", lr_share_max="max").reset_index())
    table["rung"] = rung
    table["share_done"] = np.minimum(rung / table["epochs"], 1.0)
    return table[[*keys, *SCHEDULE_COLUMNS]]
