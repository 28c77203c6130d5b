"""The rules that choose what a sweep runs next, from what its trials reported: the screen's ranking
of arms, the arms a successive-halving rung sends on, and the arms the confirm phase runs.

An *arm* is one combination of the factors' levels; its trials differ only by seed.

**Screen ranking** (read from the screen phase only, validation accuracy only): arms are ranked
first by how deep the scheduler let them run (the last epoch any of the arm's trials reached: ASHA's
promotions are the screen's verdict, and an arm stopped at a rung has not been compared with the
arms past it at the same epoch), then by the mean over the arm's trials of their best validation
accuracy, then by the first trial's order. A successive-halving screen ranks by the deepest rung
reached, then by validation accuracy at the end of each trial's fitted schedule
(:func:`rung_ranking`). Test accuracy is never read from the screen.

**Promotion**: a rung sends on its best 1/eta arms (:func:`rung_keeps`, :func:`promoted_arms`).

**Confirm set**: the `top` best arms of the screen; the *leave-one-out neighbours* of the best arm
(for each factor not at its reference level, the same arm with that factor set back to it); and the
all-reference arm. Each arm once, with why it was chosen (:func:`confirm_arms`).

The sweep's driver records each choice in sweep.json before anything of it runs; the report reads
the choices back from there.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from study.factors import reference_level
from study.states import ended


def rung_keeps(arms: int, eta: float) -> int:
    """How many of a rung's `arms` successive halving sends on to the next rung: the best 1/eta
    (rounded down, at least one)."""
    return max(1, math.floor(arms / eta))


def promoted_arms(trials: pd.DataFrame, epochs: pd.DataFrame, factors: Sequence[str], rung: int,
                  eta: float) -> tuple[list[dict[str, Any]], int]:
    """([{"levels", "why"}, ...], arms ranked): the best 1/eta of the arms of the screen's rung
    `rung` (0 = the first) that have a validation accuracy at the end of their schedules, best first."""
    here = trials[trials["rung"] == rung]
    ranking = rung_ranking(here, epochs, factors)
    kept = ranking.head(rung_keeps(len(ranking), eta)) if len(ranking) else ranking
    budget = int(ranking["epochs"].max()) if len(ranking) else 0
    arms = [{"levels": {f: plain(row[f]) for f in factors},
             "why": f"rung {rung + 1} rank {row['rank']} of {len(ranking)}: validation {row['mean_val_at_end']:.2f}% "
                    f"at the end of its {budget}-epoch schedule (mean of {row['trials']} trial(s))"}
            for row in kept.to_dict("records")]
    return arms, len(ranking)


def arm_label(arm: dict, factors: Sequence[str]) -> str:
    """``attention=channel, recipe=holistic``: one arm, in the factors' order."""
    return ", ".join(f"{f}={arm[f]}" for f in factors)


def arm_labels(frame: pd.DataFrame, factors: Sequence[str]) -> pd.Series:
    """Each row's arm (:func:`arm_label`), aligned with the frame's index."""
    return pd.Series([arm_label(arm, factors) for arm in frame[list(factors)].to_dict("records")],
                     index=frame.index, dtype=object)


def reasons(spec: dict, factors: Sequence[str]) -> dict[str, str]:
    """Arm label -> why the confirm phase runs it, from sweep.json's ``phases.confirm``."""
    return {arm_label(a["levels"], factors): str(a.get("why", "")) for a in spec["arms"]}


def rung_ranking(trials: pd.DataFrame, epochs: pd.DataFrame, factors: Sequence[str]) -> pd.DataFrame:
    """A successive-halving screen's arms, best first: by the deepest rung the arm reached
    (``deepest_rung``, 1 = the first), then by ``mean_val_at_end``, the mean over its trials of that
    rung of their validation accuracy at the end of their own schedule (every trial of a rung ran
    its whole schedule, fitted to the rung's budget: study.trial.fit_to_budget), then by the first
    trial's order. Only trials that ran to their own end (study.states.ended) are ranked; ``epochs``
    is the most epochs the arm's trials ran in that rung."""
    factors = list(factors)
    reported = epochs.dropna(subset=["val_acc"]).sort_values("epoch", kind="stable")
    at_end = reported.groupby("trial_id")["val_acc"].last()
    ran = reported.groupby("trial_id")["epoch"].max()
    frame = trials[["trial_id", *factors, "rung"]].assign(val_at_end=trials["trial_id"].map(at_end),
                                                         ran=trials["trial_id"].map(ran), order=range(len(trials)))
    frame = frame[ended(trials).to_numpy() & frame["val_at_end"].notna().to_numpy() & frame["rung"].notna().to_numpy()]
    frame = frame.assign(key=arm_labels(frame, factors))
    frame = frame[frame["rung"] == frame.groupby("key")["rung"].transform("max")]
    arms = (frame.groupby("key", sort=False)
            .agg(**{f: (f, "first") for f in factors}, trials=("trial_id", "size"), deepest_rung=("rung", "max"),
                 epochs=("ran", "max"), mean_val_at_end=("val_at_end", "mean"), order=("order", "min")))
    arms["deepest_rung"] = arms["deepest_rung"].astype(int) + 1
    arms = arms.sort_values(["deepest_rung", "mean_val_at_end", "order"], ascending=[False, False, True],
                            kind="stable").reset_index(drop=True)
    arms["rank"] = range(1, len(arms) + 1)
    return arms.drop(columns=["order"])


def screen_ranking(trials: pd.DataFrame, epochs: pd.DataFrame, factors: Sequence[str]) -> pd.DataFrame:
    """One row per arm of the screen, best first (module docstring; a successive-halving screen's
    by :func:`rung_ranking`): the factors, ``trials``,
    ``deepest_epoch``, ``mean_best_val`` (mean over its trials of their best val accuracy so far),
    ``rank`` (1 = best). Depth ranks only what the scheduler did: an arm with a trial that ended on
    its own (finished, its own patience, diverged: study.states.ended) ranks as deep as any, so arms with
    fewer planned epochs (an epochs axis, stages without fine-tuning) are not ranked below the rest."""
    if "rung" in trials and trials["rung"].notna().any():
        return rung_ranking(trials, epochs, factors)
    factors = list(factors)
    best_val = epochs.groupby("trial_id")["val_acc"].max()
    deepest = epochs.groupby("trial_id")["epoch"].max()
    own_end = ended(trials)
    frame = trials[["trial_id", *factors]].assign(best_val=trials["trial_id"].map(best_val),
                                                   deepest=trials["trial_id"].map(deepest),
                                                   kept=trials["trial_id"].map(deepest).where(~own_end, np.inf),
                                                   order=range(len(trials)))
    frame = frame[frame["best_val"].notna()]
    arms = (frame.assign(key=arm_labels(frame, factors)).groupby("key", sort=False)
            .agg(**{f: (f, "first") for f in factors}, trials=("trial_id", "size"),
                 deepest_epoch=("deepest", "max"), kept=("kept", "max"), mean_best_val=("best_val", "mean"),
                 order=("order", "min")))
    arms = arms.sort_values(["kept", "mean_best_val", "order"], ascending=[False, False, True],
                            kind="stable").reset_index(drop=True)
    arms["rank"] = range(1, len(arms) + 1)
    return arms.drop(columns=["order", "kept"])


def leave_one_out(best: dict, references: dict) -> list[tuple[dict, str]]:
    """The best arm's neighbours: per factor not at its reference, (that factor set back to it, the
    factor)."""
    return [({**best, f: ref}, f) for f, ref in references.items() if best[f] != ref]


def removed(best: dict, factor: str, references: dict | None = None) -> str:
    """What a neighbour removes from the best arm: ``without attention=channel``, with ``(-> none)``
    when given the references."""
    return f"without {factor}={best[factor]}" + (f" (-> {references[factor]})" if references else "")


def confirm_set(ranking: pd.DataFrame, factors: Sequence[str], references: dict | None,
                top: int) -> pd.DataFrame:
    """The arms to confirm (module docstring), each once, in order: top arms, leave-one-out
    neighbours of the best, the all-reference arm; column ``why`` lists every reason an arm was
    chosen. Without `references` (a random or Optuna search: no reference levels), the top arms only."""
    chosen: dict[str, tuple[dict, list[str]]] = {}

    def add(arm: dict, why: str) -> None:
        chosen.setdefault(arm_label(arm, factors), (arm, []))[1].append(why)

    top_arms = ranking.head(top)[list(factors)].to_dict("records")
    for i, arm in enumerate(top_arms, 1):
        add(arm, f"screen rank {i}")
    if references and top_arms:
        for arm, factor in leave_one_out(top_arms[0], references):
            add(arm, removed(top_arms[0], factor, references))
        add({f: references[f] for f in factors}, "all-reference baseline")
    return pd.DataFrame([{**arm, "why": "; ".join(why)} for arm, why in chosen.values()],
                        columns=[*factors, "why"])


def confirm_arms(trials: pd.DataFrame, epochs: pd.DataFrame, params: Mapping[str, Any], confirm: Mapping[str, Any],
                 search: str, levels: Mapping[str, Any] | None = None) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """([{"levels", "why"}, ...], references): the confirm set of the screen's trial and epoch frames
    (the ranking on validation, then top K, the best arm's leave-one-out neighbours and the
    all-reference arm: :func:`confirm_set`). References exist for a grid screen only: per factor, the level effects
    are measured against (study.factors.reference_level; `levels`: a user model's toggles' defaults), as
    the trials ran them."""
    factors = confirm["factors"]
    grid = search == "grid" and all("grid" in params[f] for f in factors)
    references = ({f: as_ran(reference_level(pd.Series(params[f]["grid"], name=f), levels), trials[f]) for f in factors}
                  if grid and factors else None)
    chosen = confirm_set(screen_ranking(trials, epochs, factors), factors, references, confirm["top"])
    arms = [{"levels": {f: plain(row[f]) for f in factors}, "why": row["why"]} for row in chosen.to_dict("records")]
    return arms, references


def as_ran(level: Any, ran: Any) -> Any:
    """A space's level as the trials ran it (TrainConfig's type: a YAML grid [1, 5] of a float field
    ran as 1.0 and 5.0), so that an arm, its neighbours and the reference are written alike."""
    return next((plain(value) for value in ran if value == level), level)


def plain(value: Any) -> Any:
    """A NumPy scalar as the Python value JSON and Ray's config hold."""
    return value.item() if hasattr(value, "item") else value
