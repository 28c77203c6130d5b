"""What helped, by how much, and is it real: which trials may be compared, the ablation's factors,
main effects and recipe interactions from the factorial model of :mod:`analysis.factorial`.

Which trials are compared follows from how the sweep chose and stopped them (:func:`compared_trials`):

- a designed grid whose trials all ran to their end: final test accuracy, factorial effects;
- a grid where a scheduler (ASHA) stopped trials: the trials that finished were *selected on the
  outcome*, so no effect on final accuracy is computed from them. Effects are computed only as an
  early-training screen, on validation accuracy at the last epoch every trial reached (ASHA's first
  rung), and labelled so; the final answer needs trials run to the end;
- a random or Optuna search: no effects at all (adaptive sampling ties each level to the others and
  to time, so a contrast between levels has no valid interval); importance and the best trials only.

Every choice returns a sentence saying what was included and what was left out; the report prints it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from analysis import contrasts, factorial
from analysis.factorial import ALPHA, FactorialFit
from analysis.load import ended
from analysis.render import p_value
from sweep import record
from training.config import TrainConfig

EQUIVALENCE_MARGIN = 0.5  # points: "did not help" means shown to help by less than this
# TrainConfig fields that change the network rather than how it is trained.
ARCHITECTURE_FIELDS = ("model", "width", "attention", "residual", "dsconv", "activation", "batch_norm",
                       "dropout", "stem")
NOT_FACTORS = ("seed", "data_dir", "threads", "device", "init_from", "measure_latency", "eval_batch_size")
REFERENCE_NAMES = ("baseline", "none", "default")  # preferred reference level of a bundle factor
DEFAULTS = TrainConfig().to_dict()
ADAPTIVE_SEARCHES = ("random", "optuna")


@dataclass(frozen=True)
class Compared:
    """The trials an analysis compares, on which metric, and why (see the module docstring)."""
    frame: pd.DataFrame
    metric: str
    note: str  # what was included and excluded
    label: str  # what the metric means here: final test accuracy, or an early-training screen
    effects_refused: str = ""  # why no factorial effects, "" when they are computed
    title_note: str = ""  # what the tables' titles add: an early-training screen, or validation only
    at_chance: pd.DataFrame | None = None  # arms left out because they did not learn (analysis.learning)
    arms: int = 0  # arms the learning check tested


def compared_trials(trials: pd.DataFrame, epochs: pd.DataFrame, search: str | None,
                    validation_only: bool = False) -> Compared:
    """Apply the rules of the module docstring to an experiment's frames; `search` is sweep.json's
    plan (None when the experiment has no sweep record: then it is taken as a designed grid).
    `validation_only`: a screen that a confirm phase follows, whose test accuracy is never read (the
    confirm phase's is): validation accuracy at the last epoch every trial reached, as for ASHA."""
    stopped = int((trials["stop_reason"] == "scheduler_stopped").sum())
    title = "early-training screen, not final accuracy"
    if validation_only and not stopped:
        epoch = common_epoch(trials)
        frame, note = at_common_epoch(trials, epochs, epoch)
        label = (f"the screen's validation accuracy at epoch {epoch}, the last epoch every trial reached "
                 "(a confirm phase follows: test accuracy is read from its trials only)")
        metric, title = "val_acc_at_epoch", "the screen's validation accuracy"
    elif stopped:
        epoch = common_epoch(trials)
        frame, note = at_common_epoch(trials, epochs, epoch)
        label = (f"early-training screen: validation accuracy at epoch {epoch}, the last epoch every "
                 f"trial reached ({stopped} of {len(trials)} trials were stopped by the scheduler; "
                 "this is not final accuracy, and the final test accuracy of the trials that ran to the "
                 "end is not compared: the scheduler selected them on this very outcome)")
        metric = "val_acc_at_epoch"
    else:
        frame, note = completed(trials)
        label, metric = "final test accuracy (best-validation weights)", "test_acc"
    title = title if metric != "test_acc" else ""
    if search in ADAPTIVE_SEARCHES:
        return Compared(frame, metric, note, label,
                        f"No factorial effects: this sweep drew its configurations by {search} search, "
                        "so levels are confounded with each other (and, for Optuna, with time), and a "
                        "difference between levels has no valid interval. Importance and the best "
                        "trials are shown instead; run a grid space to measure effects.", title)
    return Compared(frame, metric, note, label, title_note=title)


def completed(trials: pd.DataFrame, metric: str = "test_acc") -> tuple[pd.DataFrame, str]:
    """Trials with a final report (finished, patience-stopped or diverged) and their `metric`."""
    keep = ended(trials, metric)
    left_out = trials.loc[~keep, "stop_reason"].value_counts()
    note = (f"{metric} of the {int(keep.sum())} trials with a final report (finished, early-stopped by "
            f"patience or diverged); excluded: {describe_counts(left_out)}")
    return trials[keep].reset_index(drop=True), note


def at_common_epoch(trials: pd.DataFrame, epochs: pd.DataFrame, epoch: int | None = None,
                    metric: str = "val_acc") -> tuple[pd.DataFrame, str]:
    """Every trial's `metric` at `epoch` (default: :func:`common_epoch`), as column
    ``<metric>_at_epoch``; trials that never reached it are out."""
    if epoch is None:
        epoch = common_epoch(trials)
    at = epochs[epochs["epoch"] == epoch].set_index("trial_id")[metric]
    frame = trials.assign(**{f"{metric}_at_epoch": trials["trial_id"].map(at)})
    keep = frame[f"{metric}_at_epoch"].notna()
    note = (f"{metric} at epoch {epoch} of the {int(keep.sum())} trials that reached it, scheduler-stopped "
            f"ones included; excluded: {describe_counts(frame.loc[~keep, 'stop_reason'].value_counts())}")
    return frame[keep].reset_index(drop=True), note


def common_epoch(trials: pd.DataFrame) -> int:
    """The last epoch every trial with results reached (e.g. ASHA's grace period); 1 without any."""
    reported = trials[trials["last_epoch"] > 0]
    return int(reported["last_epoch"].min()) if len(reported) else 1


def describe_counts(counts: pd.Series) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in counts.items()) or "none"


def ablation_factors(trials: pd.DataFrame, config_columns: Sequence[str],
                     axes: Sequence[str] | None = None) -> list[str]:
    """The factors of a sweep: every axis of its space (`axes`, from sweep.json) but the replicates
    (seed), bundle keys (stage, recipe) first. Without a sweep record, detected from the data: the
    config columns that vary across `trials`, minus seed and columns fully determined by an earlier
    kept factor (a recipe's learning rate is the recipe, not a factor). Detection cannot tell a
    sampled knob from one it determines (32 random draws of dropout each determine every other
    column), so it is the fallback only."""
    if axes is not None:
        axes = [a for a in axes if a in trials and a not in NOT_FACTORS]
        return [a for a in axes if a not in DEFAULTS] + [a for a in axes if a in DEFAULTS]
    ordered = [c for c in config_columns if c not in DEFAULTS] + [c for c in config_columns if c in DEFAULTS]
    rungs = "rung" in trials and trials["rung"].notna().any()  # a successive-halving screen fits these per rung
    kept: list[str] = []
    for column in ordered:
        if column in NOT_FACTORS or column not in trials or trials[column].nunique(dropna=False) < 2:
            continue
        if rungs and column in record.BUDGET_FIELDS:
            continue
        if not any(trials.groupby(k, dropna=False)[column].nunique(dropna=False).max() == 1 for k in kept):
            kept.append(column)
    return kept


def reference_level(values: pd.Series, references: Mapping[str, Any] | None = None) -> object:
    """The level effects are measured against: the TrainConfig default (a user model's toggle: its
    factory's default, sweep.json's ``reference_levels``) when present, else a level named
    baseline/none/default, else the first level in trial order (the space's order)."""
    levels = list(dict.fromkeys(values.dropna()))
    for preferred in ((references or {}).get(values.name, DEFAULTS.get(values.name)), *REFERENCE_NAMES):
        if preferred is not None and preferred in levels:
            return preferred
    return levels[0]


def designed_factors(frame: pd.DataFrame, factors: Sequence[str]) -> list[str]:
    """The factors a factorial model can take: levels repeated across trials (a continuous knob drawn
    once per trial is left to importance)."""
    return [f for f in factors if f in frame and frame[f].nunique() >= 2 and frame[f].value_counts().max() >= 2]


def fit(frame: pd.DataFrame, factors: Sequence[str], metric: str = "test_acc",
        references: Mapping[str, Any] | None = None) -> FactorialFit:
    """The factorial model of `metric` on `factors` (+ seed blocks), each factor's reference first."""
    return factorial.fit_factorial(frame, factors, metric, {f: reference_level(frame[f], references) for f in factors})


EFFECT_COLUMNS = ["factor", "level", "reference", "n", "n_ref", "emm", "emm_ref", "effect", "se", "ci_low",
                  "ci_high", "p", "p_holm", "significant", "method", "seeds", "pooled_ci_low", "pooled_ci_high",
                  "pooled_p_holm", "differs"]


def main_effects(ff: FactorialFit) -> pd.DataFrame:
    """Per factor and non-reference level: EMM at the level and at the reference, their difference
    with its own variance (analysis.contrasts: paired over the seeds in which every cell ran, else the
    pooled model's), its 95% t interval and p, and the pooled model's interval and Holm p beside it;
    Holm over the table (one family); significant = Holm p < 0.05."""
    rows = []
    for factor in ff.factors:
        ref = ff.levels[factor][0]
        for level in ff.levels[factor][1:]:
            numbers = contrasts.both(ff, factorial.emm_weights(ff, factor, level))
            rows.append({"factor": factor, "level": level, "reference": ref,
                         "emm": factorial.marginal_mean(ff, factor, level),
                         "emm_ref": factorial.marginal_mean(ff, factor, ref), **numbers,
                         "n": ff.counts[factor][level], "n_ref": ff.counts[factor][ref],
                         "seeds": numbers["n"] if numbers["method"] == "paired" else None})
    table = pd.DataFrame(rows, columns=[*EFFECT_COLUMNS, "pooled_p"])
    return contrasts.family(table)[EFFECT_COLUMNS] if len(table) else table[EFFECT_COLUMNS]


INTERACTION_COLUMNS = ["factor", "level", "reference", "recipe", "base_recipe", "method", "effect_base", "base_low",
                       "base_high", "effect_new", "new_low", "new_high", "interaction", "ci_low", "ci_high",
                       "p_claim", "p_claim_holm", "p_against_holm", "verdict", "reason"]


def recipe_interactions(ff: FactorialFit, recipe: str = "recipe",
                        margin: float = EQUIVALENCE_MARGIN) -> pd.DataFrame:
    """Per architecture change and new recipe: its effect under the base recipe, under the new one
    and their difference (the interaction), each with its own variance where the seeds allow
    (analysis.contrasts.both), and the verdict on the study's claim (:func:`claim_verdict`; Holm over
    the rows of each of its two tests, p_claim and p_against)."""
    if recipe not in ff.factors or ff.model == factorial.MODELS[2]:
        return pd.DataFrame(columns=INTERACTION_COLUMNS)
    base = ff.levels[recipe][0]
    rows = []
    for factor in (f for f in ff.factors if f in ARCHITECTURE_FIELDS):
        for new in ff.levels[recipe][1:]:
            for level in ff.levels[factor][1:]:
                w_new = factorial.emm_weights(ff, factor, level, {recipe: new})
                w_base = factorial.emm_weights(ff, factor, level, {recipe: base})
                w_int = {c: w_new.get(c, 0.0) - w_base.get(c, 0.0) for c in {**w_new, **w_base}}
                e_new, e_base, e_int = (contrasts.both(ff, w) for w in (w_new, w_base, w_int))
                methods = sorted({e["method"] for e in (e_new, e_base, e_int)})
                tests = {"new > 0": contrasts.p_greater(e_new), f"base < {margin:g}": contrasts.p_below(e_base, margin),
                         "interaction > 0": contrasts.p_greater(e_int)}
                against = {f"it helped by {margin:g} or more under the base recipe too": 1 - contrasts.p_below(e_base, margin),
                           "it helped less with the new recipe than without it": contrasts.p_greater(e_int, negate=True)}
                shown = [p for p in against.values() if not np.isnan(p)]
                rows.append({"factor": factor, "level": level, "reference": ff.levels[factor][0], "recipe": new,
                             "base_recipe": base, "method": "/".join(methods), "effect_base": e_base["effect"],
                             "base_low": e_base["ci_low"], "base_high": e_base["ci_high"],
                             "effect_new": e_new["effect"], "new_low": e_new["ci_low"], "new_high": e_new["ci_high"],
                             "interaction": e_int["effect"], "ci_low": e_int["ci_low"], "ci_high": e_int["ci_high"],
                             "p_claim": np.nan if any(np.isnan(p) for p in tests.values()) else max(tests.values()),
                             "p_against": min(1.0, len(against) * min(shown)) if shown else np.nan,
                             "tests": tests, "against": against,
                             "aliased": not factorial.estimable(ff, factorial.cells_vector(ff, w_int))})
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=INTERACTION_COLUMNS)
    table["p_claim_holm"] = factorial.holm(table["p_claim"])
    table["p_against_holm"] = factorial.holm(table["p_against"])
    verdicts = [claim_verdict(row, margin) for row in table.to_dict("records")]
    table["verdict"], table["reason"] = [v for v, _ in verdicts], [r for _, r in verdicts]
    return table[INTERACTION_COLUMNS]


def claim_verdict(row: dict, margin: float = EQUIVALENCE_MARGIN) -> tuple[str, str]:
    """(verdict, reason) on the SqueezeNet study's claim "the change helped only together with the
    new recipe", each verdict from one Holm family over the table's rows at 0.05:

    - supported: three one-sided tests all reject (an intersection-union test, Berger 1982, whose p is
      the largest of the three, ``p_claim``): it helped under the new recipe (> 0), it helped by less
      than `margin` under the base recipe (the upper test of TOST), and the interaction is > 0;
    - not supported: the claim is shown false, by either of two one-sided tests (Bonferroni within
      the row, ``p_against``): it helped by the margin or more under the base recipe too (the mirror
      of the claim's own test, so the two verdicts cannot both hold), or it helped less with the new
      recipe (interaction < 0);
    - inconclusive otherwise, with the unadjusted p of each of the claim's tests.
    """
    if row.get("aliased"):
        return "inconclusive", ("the interaction is not estimable: the design aliases it with another "
                                "two-factor interaction (a fraction of the grid)")
    if np.isnan(row["p_claim"]) and np.isnan(row["p_against"]):
        return "inconclusive", "no interval for these contrasts: no test is possible (run more seeds)"
    if row["p_claim_holm"] < ALPHA:
        return "supported", (f"helped with the new recipe, by < {margin:g} without it, interaction > 0 "
                             f"(Holm p {row['p_claim_holm']:.2g})")
    if row["p_against_holm"] < ALPHA:
        why = min(row["against"], key=lambda k: np.inf if np.isnan(row["against"][k]) else row["against"][k])
        return "not supported", f"{why} (Holm p {row['p_against_holm']:.2g})"
    tests = ", ".join(f"{name} {p_value(p) or 'n/a'}" for name, p in row["tests"].items())
    return "inconclusive", f"one-sided p: {tests}; neither verdict's Holm p < 0.05"
