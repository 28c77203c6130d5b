"""python -m analysis.report RUN_DIR [--out DIR] [--format md|csv|tex] [--margin POINTS]

Reads a finished, interrupted or running experiment directory (STORAGE/NAME; no Ray cluster needed)
and writes DIR/report.md (default DIR: RUN_DIR/report) with its tables and PNG figures: which trials
ended how (and which are unfinished), the SqueezeNet study's stage table and the ResNet study's depth
table when the sweep ran those, the ablation's main effects, recipe interactions and fANOVA
importance, accuracy against cost with the Pareto front, and the learning curves; after a screen
with a confirm phase, those are the screen's, followed by the screen's ranking, the confirm phase's
declared questions with their answers, its looks and the confirmed arms (how each number is made: docs/ANALYSIS.md). trials.csv, epochs.csv and
sweep.json hold the frames behind it: RUN_DIR may also be such a directory, to re-run the analysis
without the trials' files; ``--format csv|tex`` also writes every table as a file.
"""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: the report never opens a window

import pandas as pd  # noqa: E402

from analysis import effects, plots, trained  # noqa: E402
from analysis.compared import Compared, common_epoch, compared_trials  # noqa: E402
from analysis.confirm import Confirmed, confirmed  # noqa: E402
from analysis.confirm_report import confirm_sections  # noqa: E402
from analysis.depth import depth_table, layers  # noqa: E402
from analysis.fidelity import schedules_at_rung  # noqa: E402
from analysis.halving import rung_table  # noqa: E402
from analysis.importance import importance  # noqa: E402
from analysis.lenth import lenth  # noqa: E402
from analysis.pareto import arm_summary  # noqa: E402
from analysis.render import FORMATS, Section, to_markdown, write_table  # noqa: E402
from analysis.stages import stage_steps, stage_table, study_data_caveat  # noqa: E402
from analysis.verdicts import verdict_section  # noqa: E402
from study import layout, learning  # noqa: E402
from study.best import confirmed_best, ranked  # noqa: E402
from study.busy import BUSY_SHARE  # noqa: E402
from study.best import describe as describe_best  # noqa: E402
from study.cli import Parser, finite_float, run_cli  # noqa: E402
from study.config import UserError  # noqa: E402
from study.factors import ablation_factors  # noqa: E402
from study.files import write_text_atomically  # noqa: E402
from study.front import objective_front  # noqa: E402
from study.load import Experiment, load  # noqa: E402
from study.selection import arm_labels  # noqa: E402
from study.states import STOP_REASONS, completed  # noqa: E402


def sections(exp: Experiment, margin: float = effects.EQUIVALENCE_MARGIN) -> list[Section]:
    """Every block of the report, in order; blocks that do not apply to this sweep are left out. With
    phases, the study's blocks are the screen's alone, then come the confirm phase's."""
    result = confirmed(exp, margin) if "confirm" in exp.phases else None  # one fit for the overview and the sections
    screen = exp.phase("screen")
    screened = screen_compared(screen)  # once: the overview's learning line and the effects read it
    out = [Section("What was trained", trained.TEXT.format(machine=trained.machine(exp.sweep)), "trained",
                   trained.trained_table(exp)), overview(exp, screened[1], result)]
    if len(exp.unfinished) or exp.never_started:
        out.append(unfinished_section(exp))
    body = study_sections(screen, margin, exp.path, screened)
    body += confirm_sections(exp, result) if "confirm" in exp.phases else []
    found = verdict_section(body, margin, *([result.error] if result is not None else []))
    return out + ([found] if found else []) + body


def study_sections(exp: Experiment, margin: float, root: Path,
                   screened: tuple[Experiment, Compared]) -> list[Section]:
    """Stages, depth, effects, importance, the front and the figures of one phase's trials; `root`:
    the experiment's directory (where the driver writes the latency measured alone); `screened`:
    screen_compared(exp)."""
    trials, columns = exp.trials, exp.config_columns
    validation_only = bool(exp.sweep.get("confirm_follows"))  # test accuracy: the confirm phase's only
    studied = ("stage" in trials and trials["stage"].notna().any()) or trials["model"].map(layers).notna().any()
    out = [Section("The studies' tables", STUDY_TABLES_SKIPPED)] if validation_only and studied else []
    if "stage" in trials and trials["stage"].notna().any() and not validation_only:
        staged = trials[trials["stage"].notna()]
        out.append(Section("Stages (the SqueezeNet study's Table I)", with_caveat(STAGE_TEXT, staged),
                           "stage_table", stage_table(trials)))
        steps, model = stage_steps(trials, margin=margin)
        out.append(Section("Stage steps (what each stage added)", f"{STEPS_TEXT} Model: {model}.", "stage_steps",
                           steps))
    if trials["model"].map(layers).notna().any() and not validation_only:
        out.append(Section("Depth (the ResNet study's Table 1)",
                           with_caveat(DEPTH_TEXT, trials[trials["model"].map(layers).notna()]),
                           "depth_table", depth_table(trials)))
    plan = exp.sweep.get("plan") or {}
    rungs = exp.sweep.get("rungs") or []
    if len(rungs) > 1:  # successive halving: the rungs, then the first rung's picture (every arm at one budget)
        factors = ablation_factors(trials, columns, exp.axes)
        out.append(Section("Rungs of the screen", RUNGS_TEXT, "rungs", rung_table(trials, exp.epochs, factors, rungs)))
    if exp.sweep.get("design"):
        out.append(Section("Design of the screen", design_text(exp.sweep["design"])))
    exp, compared = screened
    trials = exp.trials
    if compared.at_chance is not None and len(compared.at_chance):
        out.append(Section("Arms that did not learn", DID_NOT_LEARN_TEXT.format(
            n=len(compared.at_chance), arms=compared.arms, margin=learning.MARGIN, alpha=learning.ALPHA),
            "did_not_learn", compared.at_chance))
    ended = completed(trials, "best_val_acc" if validation_only else "test_acc")[0]  # a screen has no test pass
    out += effect_sections(compared, columns, margin, ended, exp.axes, not validation_only,
                           exp.references)
    if plan.get("scheduler") == "asha" and (trials["stop_reason"] == "scheduler_stopped").any():
        rung = int(plan.get("grace_period", common_epoch(trials)))
        out.append(Section("Schedules at ASHA's first rung", SCHEDULES_TEXT.format(rung=rung), "schedules_at_rung",
                           schedules_at_rung(trials, exp.epochs, rung)))
    objectives = exp.sweep.get("plan", {}).get("objectives") if isinstance(exp.sweep.get("plan"), dict) else None
    if objectives:
        out.append(front_section(exp, objectives, root))
    out += figure_sections(exp, compared, columns, not validation_only)
    return out


def design_text(design: dict) -> str:
    """What a fractional screen ran and what it can tell apart (sweep.design's record)."""
    chains = design.get("aliased_two_factor_interactions") or []
    return (f"A resolution-IV fraction of the grid (`--design fraction`): {design.get('arms')} of its "
            f"{design.get('full_arms')} arms, every one run to its end, in a random order (seed "
            f"{design.get('order_seed')}). Two-level axes "
            + ", ".join(f"{k} = {v}" for k, v in (design.get("two_level_axes") or {}).items())
            + f"; generators {', '.join(design.get('generators') or [])}"
            + (f"; crossed in full with {', '.join(design['crossed_in_full'])}" if design.get("crossed_in_full") else "")
            + ". Main effects are aliased with no two-factor interaction; the effects below assume three-factor and "
            "higher interactions are 0, and their intervals take the error from them. "
            + (f"These two-factor interactions are aliased with each other, so none of them is estimated alone: "
               f"{'; '.join(chains)}." if chains else "No two two-factor interactions are aliased with each other."))


def screen_compared(exp: Experiment) -> tuple[Experiment, Compared]:
    """(the trials the screen's effects compare, which and why: analysis.compared.compared_trials) of a screen's
    view; a successive-halving screen's are its first rung's (the one budget every arm ran, each
    trial to the end of its own fitted schedule), labelled with the budget."""
    plan = exp.sweep.get("plan") or {}
    rungs = exp.sweep.get("rungs") or []
    if len(rungs) > 1:
        exp = first_rung(exp)
    compared = compared_trials(exp.trials, exp.epochs, plan.get("search"), bool(exp.sweep.get("confirm_follows")))
    if len(rungs) > 1:
        fitted = (f"the first rung: every arm trained from scratch with its schedule fitted to {rungs[0]['budget']} "
                  f"of {plan.get('max_t')} epochs")
        compared = replace(compared, label=f"{compared.label}; {fitted}",
                           title_note=f"{compared.title_note + ', ' if compared.title_note else ''}first rung, "
                                      f"{rungs[0]['budget']}-epoch schedules")
    learned, at_chance, why, arms = learning.check(compared.frame, ablation_factors(
        compared.frame, exp.config_columns, exp.axes))
    compared = replace(compared, frame=learned, note=f"{compared.note}; {why}" if why else compared.note,
                       at_chance=at_chance, arms=arms)
    return exp, compared


def first_rung(exp: Experiment) -> Experiment:
    """A successive-halving screen's first rung alone: every arm, each trial's whole schedule fitted
    to the first budget."""
    trials = exp.trials[exp.trials["rung"] == 0].reset_index(drop=True)
    return replace(exp, trials=trials, epochs=exp.epochs[exp.epochs["trial_id"].isin(trials["trial_id"])])


def deepest_rung(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials of a successive-halving screen's deepest rung that has any (its full-budget verdict),
    or every trial of any other screen."""
    if "rung" not in trials or trials["rung"].isna().all():
        return trials
    return trials[trials["rung"] == trials["rung"].max()].reset_index(drop=True)


def front_section(exp: Experiment, objectives: list[list[str]], root: Path) -> Section:
    """A multi-objective sweep's front: the trials that ran to their end, none dominated by another on
    every objective; latency measured alone where the driver measured it."""
    ended, note = completed(exp.trials)
    alone = layout.read_latency_alone(root)
    frame = objective_front(ended, objectives, alone)
    used = frame.attrs["objectives"]
    factors = [c for c in ablation_factors(ended, exp.config_columns) if c not in dict(used)]
    shown = [c for c in ("trial_id", *factors, *dict(used), "best_val_acc", "test_acc", "latency_alone_ms_b1",
                         "latency_alone_ms_b32") if c in frame]
    table = frame[frame["pareto"]].sort_values(used[0][0], kind="stable")[list(dict.fromkeys(shown))]
    text = (f"Objectives: {', '.join(f'{m} ({d})' for m, d in used)}; each trial's final report gives them "
            f"(latency_alone_*: see below); {note}. "
            f"{int(frame['pareto'].sum())} of {len(frame)} trials are on the front (no other trial is at least as "
            "good on every objective and better on one); the table lists them, the figure greys the rest. "
            "Selection is on validation; test accuracy is shown, not optimised. ")
    if alone:
        text += (f"latency_alone_ms_*: measured after the sweep for {alone['which']}, one model at a time, "
                 f"{alone['threads']} thread, median of {alone['repeats']}, on {alone['machine']}"
                 + ("; the front uses them" if "latency_alone_ms_b1" in dict(used) else "") + "."
                 + (f" **Other processes used {alone['other_load']:.0%} of the machine's CPU time while they were "
                    "timed: they are inflated.**" if isinstance(alone.get("other_load"), (int, float))
                    and alone["other_load"] > BUSY_SHARE else ""))
    else:
        text += SHARED_TEXT
    figure = plots.objective_front_plot(frame, used) if len(used) >= 2 and len(frame) else None
    return Section("Front of the objectives", text, "objective_front", table, figure)


def overview(exp: Experiment, compared: Compared, result: Confirmed | None = None) -> Section:
    """How many trials ran and how they ended (per phase), whether most of the screen's arms learned
    nothing (`compared`: screen_compared's), the best trial and arm, and with a confirm phase its
    `result` (analysis.confirm.confirmed)."""
    sweep, trials = exp.sweep, exp.trials
    plan = sweep.get("plan", {})
    problems = layout.sweep_problems(exp.path)
    lines = [f"Experiment `{exp.path}`" + (f": space `{sweep['space_name']}`" if "space_name" in sweep else
                                           " (no sweep.json: not started by sweep/run.py)" if not problems else "")]
    if problems:
        lines.append(f"Its record is damaged and read without what is: {'; '.join(problems)}. The trials come "
                     "from their own files; what the damaged parts recorded is not used.")
    if plan:
        epochs = f"{plan['max_t']} epoch{'s' if plan['max_t'] != 1 else ''}"
        lines.append(("Screen: " if exp.phases else "")
                     + f"{plan['search']} search, {plan['scheduler']} scheduler, at most {epochs} per trial")
    if exp.phases:
        lines += [phase_line(exp, name) for name in layout.PHASES if name in exp.phases]
        lines += [PHASES_TEXT] if "confirm" in exp.phases else []  # a space without one ran its screen only
    else:
        lines.append(f"{len(trials)} trials recorded"
                     + (f" of {sweep['expected_trials']} expected" if "expected_trials" in sweep else ""))
    screen = exp.phase("screen")
    if compared.at_chance is not None and learning.most_did_not_learn(compared.at_chance, compared.arms):
        lines.insert(0, f"**Most arms did not learn: {len(compared.at_chance)} of {compared.arms} stayed at "
                        f"{learning.chance_words(compared.at_chance)}** (best validation accuracy not shown above it + "
                        f"{learning.MARGIN:g} points): the numbers below describe models that learned little or "
                        "nothing. Train longer, on more images or with more optimiser steps an epoch (a smaller "
                        "batch_size) before reading effects.")
    if "confirm" in exp.phases and result:  # one best: the confirmed one (the screen's rank 1 is in Screen ranking)
        (_, head), *rest = result.lines  # the console's lines: the deeper ones as (nested) bullets
        lines.append(f"**The best:** {head}" + "".join(f"\n{'  ' * (depth - 1)}- {text}" for depth, text in rest))
        trial = confirmed_best(exp)
        if trial is not None:
            lines.append(f"Its trial with the best validation accuracy: `{trial['trial_id']}` (re-run: `python train.py "
                         f"--config {exp.path}/{trial['trial_dir']}`; export: `python -m deploy.export {exp.path} --best`)")
    else:
        lines += describe_best(deepest_rung(screen.trials),
                               ablation_factors(screen.trials, exp.config_columns, exp.axes),
                               test=not ("confirm" in exp.phases or sweep.get("confirm_follows")))
        if "confirm" in exp.phases:
            lines.append("confirm phase: no trial has run to its end yet; the best above is the screen's, by validation")
    for reason, word in (("timed_out", "Timed out"), ("errored", "Errored")):
        stopped = trials[trials["stop_reason"] == reason]
        lines += [f"{word} `{t}`: {msg}" for t, msg in zip(stopped["trial_id"], stopped["error"])]
    lines += [line for line in [learning.exploded_line(learning.exploded(trials, exp.epochs))] if line]
    lines += [f"Skipped (its files could not be read): {what}" for what in exp.skipped]
    return Section("Trials", "\n\n".join(lines), "trial_outcomes", outcomes_table(exp))


def phase_line(exp: Experiment, name: str) -> str:
    """'Confirm (`EXP/confirm`): 17 trials recorded of 18 expected: 16 finished, 1 errored'."""
    view = exp.phase(name)
    expected = view.sweep.get("expected_trials")
    counts = view.trials["stop_reason"].value_counts()
    outcomes = ", ".join(f"{int(counts[r])} {r}" for r in STOP_REASONS if counts.get(r, 0))
    return (f"{name.capitalize()} (`{view.path}`): {len(view.trials)} trials recorded"
            + (f" of {expected} expected" if expected is not None else " (how many: not yet chosen)")
            + (f": {outcomes}" if outcomes else ""))


def outcomes_table(exp: Experiment) -> pd.DataFrame:
    """How the trials ended: per stop reason, n (with phases: n per phase) and what it means."""
    names = [name for name in layout.PHASES if name in exp.phases] or [None]
    counts = {name: (exp.trials if name is None else exp.phase(name).trials)["stop_reason"].value_counts()
              for name in names}
    scheduler = (exp.sweep.get("plan") or {}).get("scheduler", "")
    return pd.DataFrame([{"stop_reason": r.value, **{name or "n": int(counts[name].get(r, 0)) for name in names},
                          "meaning": r.meaning(scheduler)}
                         for r in STOP_REASONS if any(c.get(r, 0) for c in counts.values())])


def unfinished_section(exp: Experiment) -> Section:
    """Which trials an interrupted (or running) experiment has not finished, with their factors."""
    factors = ablation_factors(exp.trials, exp.config_columns, exp.axes)
    table = exp.unfinished[["trial_id", *(["phase"] if exp.phases else []), "ray_status", *factors, "seed",
                            "last_epoch", "trial_dir"]]
    text = (f"**The experiment is interrupted or still running: {len(table)} trial(s) unfinished"
            + (f", {exp.never_started} never started" if exp.never_started else "")
            + ".** Unfinished trials have no test accuracy and are left out of the tables below; "
            "`python sweep/run.py --resume RUN_DIR` continues them.")
    return Section("Unfinished trials", text, "unfinished", table)


def with_caveat(text: str, trials: pd.DataFrame) -> str:
    """A study table's text, preceded by the caveat when the trials did not train on the study's data."""
    caveat = study_data_caveat(trials)
    return f"{caveat}\n\n{text}" if caveat else text


DID_NOT_LEARN_TEXT = ("{n} of {arms} arms did not learn: none of their trials' best validation accuracy is shown above chance + "
        "{margin:g} points (chance = 100 / classes; one-sided exact binomial test of the correct validation images, "
        "scipy.stats.binomtest, alpha {alpha:g}; study.learning). They are left out of the effects, interactions, "
        "importance, front and figures of the compared trials below, which compare the arms that learned (a "
        "contrast with a model that learned nothing measures a failure to learn, not the size of an effect). Per arm: n trials, the highest best validation "
        "accuracy among them (%), chance, the validation images, p_learned (the best trial's test of accuracy > "
        "chance + {margin:g}), p_at_chance (the opposite test, accuracy < chance + {margin:g}, the largest over the "
        "arm's trials) and p_at_chance_holm (Holm over the table): below 0.05 the arm is shown to stay within "
        "{margin:g} points of chance, else it is only not shown to learn.")
PHASES_TEXT = ("Screen, then confirm: the sections before Screen ranking are the screen's (its trials only); "
               "from Screen ranking on, the screen's arms are ranked on validation accuracy and the chosen "
               "ones confirmed on the confirm phase's test accuracy.")
STUDY_TABLES_SKIPPED = ("Not computed from the screen: the studies' tables report test accuracy, and with a confirm "
                        "phase test accuracy is read from its trials only (see Confirmed arms). Run the space "
                        "with --no-confirm for the tables over every arm run to its end.")
SHARED_TEXT = ("Latency and wall time come from inside the trials: where `timing` is `shared`, other "
               "trials ran on the same machine at the same time, so these figures are inflated and noisy.")
STAGE_TEXT = ("Test accuracy (%) of the best-validation weights, params (M), GFLOPs and wall time (min): "
              "mean ± std across seeds, n trials with a final report (n_other: the rest). paper_test_acc "
              "is the study's single run (CIFAR-10); diff_vs_paper = our mean − the study's, given only when "
              "every trial trained on all of CIFAR-10 at 32x32. " + SHARED_TEXT)
STEPS_TEXT = ("Each step's effect is the next stage's mean test accuracy minus the previous one's (points), "
              "with its own variance: paired over the seeds both stages ran (a seed fixes the split and data "
              "order of every stage; Welch where they share fewer than two), with its 95% t interval and p; "
              "p_holm adjusts over the steps (Holm), and significant means p_holm < 0.05; pooled_*: the same "
              "step from one model of all stages with the seed as a block (one residual variance for every "
              "stage), differs where the two disagree on significance; p_equivalent_holm: the equivalence test "
              "(TOST) of |step| < the margin (`--margin`), Holm over the steps, with margin_shown (the smallest "
              "margin these numbers show, before Holm's adjustment) and seeds_needed (for a ±margin answer, 80% "
              "chance when the step is 0). "
              "Each stage changes several things at "
              "once (sweep/spaces.py), so a step is the effect of that bundle, not of one change. "
              "paper_step is the study's single-run step on CIFAR-10, for context.")
DEPTH_TEXT = ("Mean ± std across seeds, n trials with a final report. Increases are relative to "
              "ResNet-18 under the same recipe, in %. paper_*: the study's single runs (CIFAR-10, 50 epochs, "
              "batch 256, lr 5e-4, ResNet-152 ImageNet-pretrained with only its last layer trained, Colab "
              "GPU). Only rows with comparable = True ran as the study did (all of CIFAR-10, its recipe, "
              "pretrained exactly where it was); diff_vs_paper = our mean − the study's accuracy is given "
              "for those alone. " + SHARED_TEXT)


def effect_sections(compared: Compared, config_columns: tuple[str, ...],
                    margin: float = effects.EQUIVALENCE_MARGIN, ended: pd.DataFrame | None = None,
                    axes: tuple[str, ...] | None = None, test: bool = True,
                    references: dict[str, Any] | None = None) -> list[Section]:
    """Main effects and recipe interactions from the factorial model (designed grids only), or why
    none; then importance; for an adaptive search, the best of the trials that `ended` (ran to
    their own end), with their test accuracy unless not `test`. The factors are the sweep's `axes`
    when it recorded them; `references`: the reference levels of a user model's toggles."""
    frame, metric = compared.frame, compared.metric
    factors = ablation_factors(frame, config_columns, axes)
    heading = f"Compared: {compared.label}. {compared.note}."
    if compared.at_chance is not None and len(compared.at_chance) and len(frame) < 2:
        return [Section("Effects", f"{heading} No effects: fewer than two trials of arms that learned are left.")]
    if not factors or len(frame) < 2:
        return []
    if compared.effects_refused:
        ended = compared.frame if ended is None else ended
        out = [Section("Effects", f"{heading} {compared.effects_refused}")]
        out.append(Section("Best trials by validation accuracy", BEST_TEXT, "best_trials",
                           best_trials(ended, factors, test=test))
                   if len(ended) else
                   Section("Best trials by validation accuracy", "No trial has run to its own end yet."))
    else:
        out = factorial_sections(frame, effects.designed_factors(frame, factors), metric, heading, margin,
                                 references)
        if compared.title_note:
            out = [replace(section, title=f"{section.title} ({compared.title_note})") for section in out]
    ranking, note = importance(frame, factors, metric)
    return out + [Section(f"Importance for {metric}", f"{IMPORTANCE_TEXT} {note[0].upper()}{note[1:]}.",
                          "importance", ranking)]


def factorial_sections(frame: pd.DataFrame, factors: list[str], metric: str, heading: str,
                       margin: float, references: dict[str, Any] | None = None) -> list[Section]:
    if not factors:
        return [Section("Effects", f"{heading} No factor has a level with 2 or more trials: no effects.")]
    ff = effects.fit(frame, factors, metric, references=references)
    main = effects.main_effects(ff, margin)
    tests = int(main["p"].notna().sum())
    text = (f"{heading} Model: {ff.describe()}. {MAIN_TEXT} Family: the {tests} "
            f"test{'s' if tests != 1 else ''} of this table.")
    out = [Section(f"Main effects on {metric}", text, "main_effects", main,
                   plots.effects_plot(main, metric, heading) if len(main) else None)]
    screened = lenth(frame, factors, metric, {f: levels[0] for f, levels in ff.levels.items()})
    if screened is not None:
        out.append(Section(f"Lenth's method on {metric} (one trial per arm)", LENTH_TEXT.format(
            note=screened.note, model=("the main effects' intervals above pool the three- and higher-way interactions "
                                       "as the error" if ff.pooled_interactions else "the main effects above have no "
                                       "interval")), "lenth", screened.table,
                           plots.half_normal_plot(screened.table, screened.me, screened.sme, metric)))
    if "recipe" in factors:
        inter = effects.recipe_interactions(ff, "recipe", margin)
        why = "" if len(inter) else " No rows: the model could not separate the recipe's interactions."
        out.append(Section(f"Architecture × recipe interactions on {metric}",
                           INTERACTION_TEXT.format(margin=margin, rows=len(inter)) + why, "interactions", inter,
                           plots.interaction_plot(inter, metric) if len(inter) else None))
    return out


def best_trials(frame: pd.DataFrame, factors: list[str], k: int = 10, test: bool = True) -> pd.DataFrame:
    """The `k` trials with the highest best validation accuracy (selection on validation, never on
    test), with their factors, epochs and (unless not `test`: a screen a confirm phase follows) test
    accuracy."""
    columns = ["trial_id", *[f for f in factors if f in frame], "epochs_run", "best_val_acc",
               *(["test_acc"] if test else [])]
    return ranked(frame)[columns].head(k)


MAIN_TEXT = ("Effect = estimated marginal mean (emm) at the level − at the reference: every cell of the other "
             "factors weighted equally (not a pooled mean of trials). Its interval has the contrast's own variance "
             "where the seeds allow (method paired: the contrast computed per seed in which every cell ran, a "
             "one-sample t interval over those seeds), else the model's residual variance (method pooled; Welch "
             "for two unpaired levels); pooled_*: the model's figure beside it, differs where the two disagree on "
             "significance. ci: 95% t interval, not adjusted; p: two-sided t test of effect = 0; p_holm: "
             "Holm-adjusted over the table; significant (green in the figure) only where p_holm < 0.05. n, n_ref: "
             "trials at the level and at the reference; seeds: the seeds a paired interval is over. "
             "p_equivalent_holm: the equivalence test (TOST) of |effect| < the margin (`--margin`), Holm-adjusted "
             "over the table; margin_shown: the smallest margin these numbers show (their own 90% interval, "
             "before Holm's adjustment); seeds_needed: the seeds a ±margin "
             "answer would need for an 80% chance when the true effect is 0.")
INTERACTION_TEXT = ("Per architecture change, from the same trials: its effect under the base recipe and under "
                    "the new recipe (each averaged over the other factors' cells), and the interaction "
                    "(their difference), with 95% t intervals (method as in the main effects). Verdict on the "
                    "study's claim that the change helped only with the new recipe: supported when three one-sided "
                    "tests all reject: the new-recipe effect > 0, the base-recipe effect below +{margin:g} points "
                    "(the upper test of TOST; `--margin`) and the interaction > 0 (an intersection-union test: "
                    "p_claim is the largest of the three); not supported when the base-recipe effect is shown > 0 "
                    "or the interaction < 0 (p_against: the smaller one-sided p of the two, doubled); else "
                    "inconclusive, with each test's one-sided p. p_claim_holm and p_against_holm are each "
                    "Holm-adjusted over the table's {rows} row(s) (one family per verdict), at 0.05.")
LENTH_TEXT = ("An unreplicated grid has no replicate error: {model} (an assumption). Lenth's method (Lenth 1989) "
              "needs none: the grid's orthogonal contrasts (Helmert coding of each factor, a level against the mean "
              "of the levels before it, and all their products), scaled to unit length so each has one trial's "
              "variance; the pseudo standard error PSE from the median of the small ones (effect sparsity); active: "
              "|estimate| > ME = t(0.975; m/3) × PSE; active_simultaneous: > SME, the margin for all m at once. "
              "{note}. The figure is the half-normal plot.")
BEST_TEXT = ("The 10 best of the trials that ran to their own end, by best validation accuracy (model "
             "selection on validation), with their test accuracy; single trials, no interval.")
PER_CLASS_TEXT = ("The {k} arm(s) with the highest mean best validation accuracy (selection on validation), in that "
                  "order: the mean test accuracy on each class over the arm's trials. Descriptive: no test is made "
                  "per class.")
IMPORTANCE_TEXT = ("Share of the variance of the metric explained by each factor alone (the exact ANOVA "
                   "decomposition on a balanced grid, else fANOVA on a random forest); the last row is the rest "
                   "(interactions and noise), so the column sums to 1.")


RUNGS_TEXT = ("Successive halving: each rung trained its arms from scratch, every trial's schedule fitted to the "
              "rung's budget (epochs, warm-up, step size, patience and fine-tuning scaled together; docs/SWEEPS.md), "
              "and sent the best 1/eta by validation accuracy at the end of their schedules to the next rung. Per "
              "rung: its budget in epochs, the arms and trials it ran, the trials that ran to their end, the arms "
              "it promoted, the best arm's validation accuracy at its end (mean over the arm's trials), and "
              "spearman_next: Spearman's rank correlation between this rung's scores of the promoted arms and "
              "their scores in the next rung (n_next arms; empty with fewer than 3), how well the cheaper rung "
              "predicted the dearer one among the arms it kept. The effects, importance and figures below are "
              "the first rung's: the one budget at which every arm ran.")
SCHEDULES_TEXT = ("ASHA continues each trial from its checkpoint, so it compared every trial at epoch {rung} "
                  "part-way through a schedule planned for all its epochs: per schedule (recipe, scheduler, main "
                  "epochs), the trials that reached epoch {rung}, the share of their main schedule done there "
                  "(share_done), and their learning rate at that epoch as a share of its peak, the configured lr "
                  "(lr_share: median, min, max over the trials). A schedule still near its peak rate there "
                  "(OneCycle warms up for 30% of training) is judged before its decay; a constant one (none) "
                  "runs at the same rate to its end. Where the schedules differ, the screen's comparison at "
                  "this epoch is not the comparison at the end, and the effects above are read at it.")


def figure_sections(exp: Experiment, compared: Compared,
                    config_columns: tuple[str, ...], test: bool = True) -> list[Section]:
    """Learning and loss curves, the scheduler's stopping picture, accuracy against cost and, unless
    not `test` (a screen a confirm phase follows), the per-class test accuracy of the best arms."""
    trials, epochs = exp.trials, exp.epochs
    if epochs.empty:
        return []
    factors = ablation_factors(trials[trials["last_epoch"] > 0], config_columns, exp.axes)
    by = factors[0] if factors else None
    rungs, plan = exp.sweep.get("rungs") or [], exp.sweep.get("plan") or {}
    note = (f"the screen's first rung, every trial's schedule fitted to {rungs[0]['budget']} of {plan.get('max_t')} "
            "epochs" if len(rungs) > 1 else "")  # screen_compared's first_rung: every arm at one budget
    said = f" Trials of {note}." if note else ""
    out = [Section("Learning curves", f"Validation accuracy per epoch{f', grouped by {by}' if by else ''}.{said}",
                   "learning_curves", figure=plots.learning_curves(epochs, trials, ("val_acc",), by, note)),
           Section("Loss curves", f"Train and validation loss per epoch (as in the ResNet study's figure).{said}",
                   "loss_curves", figure=plots.learning_curves(epochs, trials, ("train_loss", "val_loss"), by, note)),
           Section("Stopping", f"Every trial's validation accuracy by epoch; the marker shows how it ended.{said}",
                   "stopping", figure=plots.stopping_plot(epochs, trials, note=note))]
    if len(compared.frame):
        arms = arm_summary(compared.frame, ablation_factors(compared.frame, config_columns, exp.axes),
                           compared.metric)
        out.append(Section("Accuracy against cost", f"Per arm: n, mean ± std across seeds of {compared.metric} "
                           f"({compared.label}), mean costs; pareto_<cost>: on the front of that mean "
                           "against the cost (none for a latency measured while trials shared the machine). "
                           + SHARED_TEXT, "pareto", arms, plots.pareto_plot(arms, compared.metric)))
    tested = compared.frame[compared.frame["test_acc"].notna()] if "test_acc" in compared.frame else compared.frame.iloc[:0]
    if test and len(tested) and any(str(c).startswith(learning.CLASS_PREFIX) for c in tested.columns):
        out.append(per_class_section(tested, ablation_factors(tested, config_columns, exp.axes)))
    return out


def per_class_section(trials: pd.DataFrame, factors: list[str], k: int = 12) -> Section:
    """Per-class test accuracy of the `k` arms with the highest mean best validation accuracy
    (selection on validation), rows in that order."""
    labels = arm_labels(trials, factors) if factors else pd.Series("all trials", index=trials.index)
    order = list(trials.groupby(labels, sort=False)["best_val_acc"].mean().sort_values(ascending=False).index[:k])
    shown = trials[labels.isin(order)]
    return Section("Per-class test accuracy", PER_CLASS_TEXT.format(k=min(k, len(order))), "per_class",
                   figure=plots.per_class_plot(shown, labels[shown.index], "Per-class test accuracy", order))


def write_report(exp: Experiment, out: Path, fmt: str = "md",
                 margin: float = effects.EQUIVALENCE_MARGIN) -> Path:
    """Write report.md, one PNG per figure, trials.csv, epochs.csv (and table files for csv/tex), each
    whole or not at all (study.files: a symbolic link in `out` is replaced, never written through)."""
    out.mkdir(parents=True, exist_ok=True)
    parts = [f"# Sweep report: {exp.path.name}"]
    for section in sections(exp, margin):
        parts += [f"## {section.title}", section.text] if section.text else [f"## {section.title}"]
        if section.table is not None:
            parts.append(to_markdown(section.table))
            if fmt != "md":
                written = write_table(section.table, out / section.name, fmt)
                parts.append(f"Table file: [{written.name}]({written.name})")
        if section.figure is not None:
            plots.save(section.figure, out / f"{section.name}.png")
            parts.append(f"![{section.title}]({section.name}.png)")
    trials_csv, epochs_csv = layout.FRAMES
    write_text_atomically(out / trials_csv, exp.trials.to_csv(index=False))
    write_text_atomically(out / epochs_csv, exp.epochs.to_csv(index=False))
    if exp.sweep:  # with the frames, a directory this module reads again without the trials' files
        write_text_atomically(out / layout.SWEEP_FILE, json.dumps(exp.sweep, indent=1, default=str) + "\n")
    alone = layout.read_latency_alone(exp.path)
    if alone and out.resolve() != exp.path.resolve():  # the front's latency measured alone, with them
        write_text_atomically(out / layout.LATENCY_FILE, json.dumps(alone, indent=1) + "\n")
    path = out / "report.md"
    write_text_atomically(path, "\n\n".join(parts) + "\n")
    return path


def check_out(out: Path | None, exp: Experiment) -> Path:
    """Where the report of `exp` goes: --out as given, else RUN_DIR/report. Refused: a file; an
    experiment's own directory or phase (a report writes sweep.json, trials.csv and epochs.csv there: it
    would overwrite the experiment's record); a directory inside a trial's directory, or inside another
    experiment (a report there overwrites that experiment's own report); a RUN_DIR/report that is a
    symbolic link leading out of the experiment. A report's own directory (frames) may be written again."""
    from study.load import is_frames
    from study.ray_files import is_experiment, is_trial_dir

    def a_record(directory: Path) -> bool:
        return is_experiment(directory) and not is_frames(directory, layout.read_sweep(directory))

    own = exp.path.resolve()
    if out is None:
        out = exp.path / "report"
        if not out.resolve().is_relative_to(own):
            raise UserError(f"{out} is a symbolic link to {out.resolve()}, outside the experiment: the report does "
                            "not write through it (--out DIR writes to a directory you name)")
        return out
    resolved = out.expanduser().resolve()
    if resolved.exists() and not resolved.is_dir():
        raise UserError(f"--out {out} is a file, not a directory")
    if resolved.is_dir() and a_record(resolved):
        raise UserError(f"--out {out} is an experiment's directory: the report's sweep.json and frames would "
                        "overwrite its record; choose another directory (the default is RUN_DIR/report)")
    for directory in (resolved, *resolved.parents):
        if is_trial_dir(directory):
            raise UserError(f"--out {out} is inside the trial directory {directory}: choose a directory of its own")
        ours = own.is_relative_to(directory) or directory.is_relative_to(own)  # the experiment `exp` is of
        if directory != resolved and a_record(directory) and not ours:
            raise UserError(f"--out {out} is inside another experiment, {directory}: the report would overwrite "
                            "that experiment's files; choose a directory of its own")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="report", description=__doc__.split("\n\n")[1])
    parser.add_argument("run_dir", metavar="RUN_DIR", help="experiment directory: STORAGE/NAME")
    parser.add_argument("--out", metavar="DIR", help="where to write (default: RUN_DIR/report)")
    parser.add_argument("--format", choices=FORMATS, default="md", help="also write each table as csv or tex")
    parser.add_argument("--margin", type=finite_float, default=effects.EQUIVALENCE_MARGIN, metavar="POINTS",
                        help="accuracy points within which two arms count as equivalent (every TOST) and below "
                             "which a change 'did not help' in the recipe verdict "
                             f"(default {effects.EQUIVALENCE_MARGIN:g})")
    try:
        args = parser.parse_args(argv)
        if not 0 < args.margin < 100:
            parser.error(f"--margin {args.margin:g} must be between 0 and 100 accuracy points")
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        exp = load(args.run_dir)
        out = check_out(Path(args.out) if args.out else None, exp)
        path = write_report(exp, out, args.format, args.margin)
    except (UserError, OSError) as exc:
        print(f"report: error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    run_cli(main)
