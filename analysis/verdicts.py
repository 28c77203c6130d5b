"""The report's claims as sentences generated from its tests: every sentence states the
claim, the verdict its test gives, and the numbers behind it.

A verdict is one of:

- **supported**: the claim's test rejects at 0.05 after Holm's adjustment over its table (a
  difference claimed in a direction: the two-sided test rejects and the estimate has that sign; the
  study's recipe claim: its intersection-union test, analysis.effects.claim_verdict);
- **not supported**: the opposite is shown: a difference in the other direction, or equivalence
  within the margin (TOST, Holm over the table) where the claim is a difference;
- **inconclusive**: neither; the sentence then says what the design can show (the smallest margin
  shown, the seeds a ±margin answer would need).

The sentences come from the report's own tables (the sections named in :data:`CLAIMS`), so every
number in them is a number of a table above or below.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import pandas as pd

from analysis import contrasts
from analysis.render import Section, interval, p_value
from study import learning
from study.significance import ALPHA

VERDICTS = ("supported", "not supported", "inconclusive")
METHOD_WORDS = {"paired": "paired over {n} seeds", "welch": "Welch, {n} trials", "pooled": "pooled model",
                "none": "no interval"}


def numbers(row: Mapping, unit: str = "points", estimate: str = "effect") -> str:
    """'+1.45 points [0.38, 2.52], paired over 3 seeds, Holm p 0.057'."""
    value = row[estimate]
    text = f"{value:+.2f} {unit}" + interval(row)
    method = row.get("method")
    if isinstance(method, str) and method in METHOD_WORDS:
        n = row.get("seeds") if method == "paired" and not pd.isna(row.get("seeds", math.nan)) else row.get("n")
        if method == "welch" and not pd.isna(row.get("n_ref", math.nan)):  # a main effect's n: the level's trials
            n = n + row["n_ref"]
        text += ", " + METHOD_WORDS[method].format(n=int(n) if not pd.isna(n) else "?")  # a main effect's n: trials
    if not math.isnan(row.get("p_holm", math.nan)):
        text += f", Holm p {p_value(row['p_holm'])}"
    return text


def equivalence(row: Mapping, margin: float | None, estimate: str = "effect") -> str:
    """What the equivalence test showed, and what the design can show: '' without one. The seeds that
    would give equivalence a chance are said only where the estimate is inside the margin (beyond it,
    more seeds would show a difference, not equivalence)."""
    if margin is None or math.isnan(row.get("p_equivalent_holm", math.nan)):
        return ""
    if row["p_equivalent_holm"] < ALPHA:
        return f"; shown within ±{margin:g} points (TOST Holm p {p_value(row['p_equivalent_holm'])})"
    text = (f"; within ±{margin:g} not shown either (TOST Holm p {p_value(row['p_equivalent_holm'])}; "
            f"the smallest margin these numbers show, before Holm's adjustment, is ±{row['margin_shown']:.2f}")
    needed = row.get("seeds_needed", math.nan)
    if not math.isnan(needed) and abs(row.get(estimate, math.nan)) < margin:
        text += f"; about {int(needed)} seeds would give ±{margin:g} an 80% chance"
    return text + ")"


def directional(claim: str, row: Mapping, sign: int, margin: float | None = None, unit: str = "points",
                estimate: str = "effect") -> str:
    """'<claim>: **supported** (numbers)' for the claim that the row's estimate is > 0 (`sign` +1) or
    < 0 (-1): supported when the two-sided Holm-adjusted test rejects with that sign; not supported
    when it rejects with the other sign or equivalence within `margin` is shown; else inconclusive."""
    shown = contrasts.outcome(row, estimate)
    if shown == contrasts.OUTCOMES[0 if sign > 0 else 1]:
        verdict = VERDICTS[0]
    elif shown in (contrasts.OUTCOMES[1 if sign > 0 else 0], contrasts.OUTCOMES[2]):
        verdict = VERDICTS[1]
    else:
        verdict = VERDICTS[2]
    tested = equivalence(row, margin, estimate) if shown not in contrasts.OUTCOMES[:2] else ""  # a difference: no TOST
    return f"{claim}: **{verdict}** ({numbers(row, unit, estimate)}{tested})."


def two_sided(claim: str, row: Mapping, margin: float | None = None, unit: str = "points") -> str:
    """'<claim>: **supported**, higher (numbers)' for the claim that the estimate differs from 0."""
    shown = contrasts.outcome(row)
    if shown in contrasts.OUTCOMES[:2]:
        verdict = f"{VERDICTS[0]}, {'higher' if row['effect'] > 0 else 'lower'}"
    else:
        verdict = VERDICTS[1] if shown == contrasts.OUTCOMES[2] else VERDICTS[2]
    tested = equivalence(row, margin) if shown not in contrasts.OUTCOMES[:2] else ""
    return f"{claim}: **{verdict}** ({numbers(row, unit)}{tested})."


def stage_steps(table: pd.DataFrame, margin: float, at_chance: Sequence[str] = ()) -> list[str]:
    """One sentence per step; a step from or to a stage that did not learn (`at_chance`: stage names,
    study.learning) says so: it measures a failure to learn, not an improvement."""
    out = []
    for row in table.to_dict("records"):
        before, after = row["step"].split(" -> ")
        failed = [name for name in (before, after) if name in at_chance]
        out.append(directional(f"The {after} stage improves test accuracy over the {before} stage", row, +1, margin)
                   + (f" The {' and '.join(failed)} stage did not learn (see Arms that did not learn): this step "
                      "measures a failure to learn, not the size of a change." if failed else ""))
    return out


def main_effects(table: pd.DataFrame, margin: float, metric: str = "") -> list[str]:
    return [two_sided(f"{row['factor']}={row['level']} (against {row['reference']}) changes {metric or 'the metric'}",
                      row, margin) for row in table.to_dict("records")]


def interactions(table: pd.DataFrame, margin: float, metric: str = "") -> list[str]:
    """One sentence per row of the recipe table, on `metric` as its section names it (the screen's
    validation accuracy at its schedules, or final test accuracy)."""
    out = []
    on = f" on {metric}" if metric else ""
    for row in table.to_dict("records"):
        verdict = {"supported": VERDICTS[0], "not supported": VERDICTS[1]}.get(row["verdict"], VERDICTS[2])
        out.append(f"The study's claim that {row['factor']}={row['level']} helped only with the {row['recipe']} "
                   f"recipe{on}: **{verdict}** ({row['reason']}; effect {row['effect_base']:+.2f} with the "
                   f"{row['base_recipe']} recipe, {row['effect_new']:+.2f} with {row['recipe']}, interaction "
                   f"{row['interaction']:+.2f} points).")
    return out


def declared_questions(table: pd.DataFrame, margin: float) -> list[str]:
    """One sentence per declared question of the confirm phase (analysis.confirm.question_table): its
    claim, the verdict of its repeated interval, its numbers and the look it closed at."""
    out = []
    for row in table.to_dict("records"):
        head, _, why = row["verdict"].partition(": ")
        numbers = (f"{row['estimate']:+.2f} points [{row['low']:.2f}, {row['high']:.2f}]" if pd.notna(row["low"]) else
                   f"{row['estimate']:+.2f} points, no interval" if pd.notna(row["estimate"]) else "no estimate")
        when = f"{row['state']} at look {row['look']}" if row["state"] != "open" else f"open after look {row['look']}"
        claim = row["claim"] or row["question"]
        out.append(f"{claim[0].upper()}{claim[1:]}: **{head}**{': ' + why if why else ''} ({numbers}, n = {row['n']} "
                   f"seed pairs, repeated interval of the declared family; {when}).")
    return out


def did_not_learn(table: pd.DataFrame, margin: float = learning.MARGIN) -> list[str]:
    """One sentence per arm at chance (study.learning.arms_at_chance's table): the claim that it stays
    at chance. `margin` is the report's equivalence margin, which this claim does not use (its own is
    study.learning.MARGIN)."""
    out = []
    factors = [c for c in table.columns if c not in learning.NUMBERS]
    for row in table.to_dict("records"):
        arm = " ".join(f"{f}={row[f]}" for f in factors) or "the one arm"
        shown = row["p_at_chance_holm"] < ALPHA
        out.append(f"{arm} stays within {learning.MARGIN:g} points of chance ({row['chance']:.3g}%): "
                   f"**{'supported' if shown else 'inconclusive'}** (best validation {row['best_val_acc']:.2f}% over "
                   f"{int(row['n'])} trial(s), {int(row['val_images']) if pd.notna(row['val_images']) else '?'} "
                   f"validation images; Holm p {p_value(row['p_at_chance_holm'])}"
                   + ("" if shown else f"; not shown above it either, p {p_value(row['p_learned'])}") + ").")
    return out


CLAIMS: dict[str, Callable[[pd.DataFrame, float], list[str]]] = {
    "did_not_learn": did_not_learn, "stage_steps": stage_steps, "interactions": interactions}


def verdict_section(found: Sequence[Section], margin: float, error: float = ALPHA) -> Section | None:
    """Every claim the report's tables test, one generated sentence each, in the order of the tables;
    None when no table tests anything. With a confirm phase, its declared questions come first, as the
    report's claims (`error`: the chance of any false claim their family allows, analysis.confirm's
    error_bound); every other sentence is marked exploratory."""
    confirmatory, exploratory = [], []
    failed = [str(name) for s in found if s.name == "did_not_learn" and s.table is not None and "stage" in s.table
              for name in s.table["stage"]]
    for section in found:
        if section.table is None or section.table.empty:
            continue
        if section.name == "questions":
            confirmatory += declared_questions(section.table, margin)
        elif section.name == "stage_steps":
            exploratory += stage_steps(section.table, margin, failed)
        elif section.name == "interactions":
            exploratory += interactions(section.table, margin, section.title.split(" interactions on ", 1)[-1])
        elif section.name in CLAIMS:
            exploratory += CLAIMS[section.name](section.table, margin)
        elif section.name == "main_effects" and section.table["p"].notna().any():
            exploratory += main_effects(section.table, margin, section.title.removeprefix("Main effects on "))
    if not (confirmatory or exploratory):
        return None
    if confirmatory:
        text = CONFIRM_VERDICTS_TEXT.format(margin=margin, error=error)
        lines = [f"- {line}" for line in confirmatory]
        lines += [line if line.startswith("  - ") else f"- Exploratory: {line}" for line in exploratory]
    else:
        text = VERDICTS_TEXT.format(margin=margin)
        lines = [line if line.startswith("  - ") else f"- {line}" for line in exploratory]
    return Section("Verdicts", text + "\n\n" + "\n".join(lines))


CONFIRM_VERDICTS_TEXT = ("The confirm phase's declared questions first, one family for all of them (Declared questions, "
                         "below: its repeated intervals keep the chance of any false claim at most about {error:g}): "
                         "**supported** where the interval excludes 0 with the claim's sign, **not supported** where it "
                         "excludes 0 the other way or lies within ±the declared margin, **inconclusive** otherwise. "
                         "Then, marked exploratory, every other claim the tables test, each from its own table's "
                         "Holm-adjusted tests at 0.05 (equivalence at ±{margin:g} points, `--margin`): not part of the "
                         "family, a lead to follow, not a finding.")
VERDICTS_TEXT = ("Every claim the tables below test, as a sentence generated from its test (docs/ANALYSIS.md, "
                 "Verdicts): **supported** where the test rejects at 0.05 after Holm's adjustment over its table, "
                 "**not supported** where the opposite or equivalence within ±{margin:g} points (`--margin`) is "
                 "shown, **inconclusive** otherwise, with what the design can show.")
