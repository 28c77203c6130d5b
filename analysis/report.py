"""python -m analysis.report RUN_DIR [--out DIR] [--format md|csv|tex]

Reads a finished, interrupted or running experiment directory (STORAGE/NAME; no Ray cluster needed)
and writes DIR/report.md (default DIR: RUN_DIR/report) with its tables and PNG figures: which trials
ended how (and which are unfinished), the SqueezeNet study's stage table and the ResNet study's depth
table when the sweep ran those, the ablation's main effects, recipe interactions and fANOVA
importance, accuracy against cost with the Pareto front, and the learning curves. trials.csv and
epochs.csv hold the frames behind it; ``--format csv|tex`` also writes every table as a file.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: the report never opens a window

import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analysis import effects, plots  # noqa: E402
from analysis.depth import depth_table, layers  # noqa: E402
from analysis.load import STOP_REASONS, Experiment, load  # noqa: E402
from analysis.pareto import arm_summary  # noqa: E402
from analysis.render import FORMATS, to_markdown, write_table  # noqa: E402
from analysis.stages import stage_table  # noqa: E402
from training.config import UserError  # noqa: E402

MEANING = {"finished": "ran every epoch", "early_stopped": "stopped by its own patience (early_stop_patience)",
           "diverged": "loss became NaN/inf", "scheduler_stopped": "stopped early by the scheduler (ASHA)",
           "errored": "raised an exception (see error)", "unfinished": "pending or running when last saved"}


@dataclass
class Section:
    """A report block: Markdown text, optionally a table (saved as `name`) and a figure."""
    title: str
    text: str = ""
    name: str = ""
    table: pd.DataFrame | None = None
    figure: Figure | None = None


def sections(exp: Experiment) -> list[Section]:
    """Every block of the report, in order; blocks that do not apply to this sweep are left out."""
    trials, columns = exp.trials, exp.config_columns
    out = [overview(exp)]
    if len(exp.unfinished) or exp.never_started:
        out.append(unfinished_section(exp))
    if "stage" in trials and trials["stage"].notna().any():
        out.append(Section("Stages (the SqueezeNet study's Table I)", STAGE_TEXT, "stage_table",
                           stage_table(trials)))
    if trials["model"].map(layers).notna().any():
        out.append(Section("Depth (the ResNet study's Table 1)", DEPTH_TEXT, "depth_table",
                           depth_table(trials)))
    compared, note = effects.completed(trials)
    out += effect_sections(compared, columns, "test_acc", note, "")
    if (trials["stop_reason"] == "scheduler_stopped").any():
        at_epoch, note = effects.at_common_epoch(trials, exp.epochs)
        out += effect_sections(at_epoch, columns, "val_acc_at_epoch", note, "_common_epoch")
    out += figure_sections(exp, compared, columns)
    return out


def overview(exp: Experiment) -> Section:
    sweep, trials = exp.sweep, exp.trials
    plan = sweep.get("plan", {})
    lines = [f"Experiment `{exp.path}`" + (f": space `{sweep['space_name']}`" if "space_name" in sweep
                                           else " (no sweep.json: not started by sweep/run.py)")]
    if plan:
        lines.append(f"{plan['search']} search, {plan['scheduler']} scheduler, at most {plan['max_t']} "
                     "epochs per trial")
    lines.append(f"{len(trials)} trials recorded"
                 + (f" of {sweep['expected_trials']} expected" if "expected_trials" in sweep else ""))
    counts = trials["stop_reason"].value_counts()
    table = pd.DataFrame([{"stop_reason": r, "n": int(counts.get(r, 0)), "meaning": MEANING[r]}
                          for r in STOP_REASONS if counts.get(r, 0)])
    errored = trials[trials["stop_reason"] == "errored"]
    lines += [f"Errored `{t}`: {msg}" for t, msg in zip(errored["trial_id"], errored["error"])]
    return Section("Trials", "\n\n".join(lines), "trial_outcomes", table)


def unfinished_section(exp: Experiment) -> Section:
    """Which trials an interrupted (or running) experiment has not finished, with their factors."""
    factors = effects.ablation_factors(exp.trials, exp.config_columns)
    table = exp.unfinished[["trial_id", "ray_status", *factors, "seed", "last_epoch", "trial_dir"]]
    text = (f"**The experiment is interrupted or still running: {len(table)} trial(s) unfinished"
            + (f", {exp.never_started} never started" if exp.never_started else "")
            + ".** Unfinished trials have no test accuracy and are left out of the tables below; "
            "`python sweep/run.py --resume RUN_DIR` continues them.")
    return Section("Unfinished trials", text, "unfinished", table)


STAGE_TEXT = ("Test accuracy (%) of the best-validation weights, params (M), GFLOPs and wall time (min): "
              "mean ± std across seeds, n trials with a final report (n_other: the rest). paper_test_acc "
              "is the study's single run; diff_vs_paper = our mean − the study's.")
DEPTH_TEXT = ("Mean ± std across seeds, n trials with a final report. Increases are relative to "
              "ResNet-18 under the same recipe, in %. paper_*: the study's single runs (50 epochs, "
              "batch 256, lr 5e-4, Colab GPU); diff_vs_paper = our mean − the study's accuracy.")


def effect_sections(frame: pd.DataFrame, config_columns: tuple[str, ...], metric: str, note: str,
                    suffix: str) -> list[Section]:
    """Main effects, recipe interactions and importance of the factors that vary in `frame`."""
    factors = effects.ablation_factors(frame, config_columns)
    if not factors or len(frame) < 2:
        return []
    main = effects.main_effects(frame, factors, metric)
    text = (f"Compared: {note}. Effect = mean at the level − mean at the reference level, pooled over the "
            "other factors and seeds; 95% Welch t interval (none where a level has fewer than 2 trials)."
            + ("" if len(main) else " No rows: no factor has a level with 2 or more trials."))
    out = [Section(f"Main effects on {metric}", text, f"main_effects{suffix}", main,
                   plots.effects_plot(main, metric, note) if len(main) else None)]
    if "recipe" in factors:
        inter = effects.recipe_interactions(frame, factors, "recipe", metric)
        text = INTERACTION_TEXT + ("" if len(inter) else " No rows: some factor × recipe cell has no trials.")
        out.append(Section(f"Architecture × recipe interactions on {metric}", text, f"interactions{suffix}",
                           inter))
    ranking = effects.importance(frame, factors, metric)
    text = IMPORTANCE_TEXT + ("" if len(ranking) else f" No rows: {metric} does not vary.")
    return out + [Section(f"Importance (fANOVA) for {metric}", text, f"importance{suffix}", ranking)]


INTERACTION_TEXT = ("Per architecture change: its effect under the base recipe, under the new recipe, and "
                    "the interaction (difference of the two), each with a 95% Welch t interval; n_min = the "
                    "smallest of the four cells. verdict on the claim that the change helped only with the "
                    "new recipe: supported / contradicted / inconclusive (an interval spans 0).")
IMPORTANCE_TEXT = ("Share of the variance of the metric explained by each factor (fANOVA on a random "
                   "forest, Optuna's FanovaImportanceEvaluator, seed 0); n trials. Sums to 1.")


def figure_sections(exp: Experiment, compared: pd.DataFrame, config_columns: tuple[str, ...]) -> list[Section]:
    """Learning and loss curves, the scheduler's stopping picture, accuracy against cost."""
    trials, epochs = exp.trials, exp.epochs
    if epochs.empty:
        return []
    factors = effects.ablation_factors(trials[trials["last_epoch"] > 0], config_columns)
    by = factors[0] if factors else None
    out = [Section("Learning curves", f"Validation accuracy per epoch{f', grouped by {by}' if by else ''}.",
                   "learning_curves", figure=plots.learning_curves(epochs, trials, ("val_acc",), by)),
           Section("Loss curves", "Train and validation loss per epoch (as in the ResNet study's figure).",
                   "loss_curves", figure=plots.learning_curves(epochs, trials, ("train_loss", "val_loss"), by)),
           Section("Stopping", "Every trial's validation accuracy by epoch; the marker shows how it ended.",
                   "stopping", figure=plots.stopping_plot(epochs, trials))]
    if len(compared):
        arms = arm_summary(compared, effects.ablation_factors(compared, config_columns))
        out.append(Section("Accuracy against cost", "Per arm: n, test accuracy mean ± std across seeds, "
                           "mean costs; pareto_<cost>: on the front of accuracy against that cost.",
                           "pareto", arms, plots.pareto_plot(arms)))
    return out


def write_report(exp: Experiment, out: Path, fmt: str = "md") -> Path:
    """Write report.md, one PNG per figure, trials.csv, epochs.csv (and table files for csv/tex)."""
    out.mkdir(parents=True, exist_ok=True)
    parts = [f"# Sweep report: {exp.path.name}"]
    for section in sections(exp):
        parts += [f"## {section.title}", section.text] if section.text else [f"## {section.title}"]
        if section.table is not None:
            parts.append(to_markdown(section.table))
            if fmt != "md":
                written = write_table(section.table, out / section.name, fmt)
                parts.append(f"Table file: [{written.name}]({written.name})")
        if section.figure is not None:
            plots.save(section.figure, out / f"{section.name}.png")
            parts.append(f"![{section.title}]({section.name}.png)")
    exp.trials.to_csv(out / "trials.csv", index=False)
    exp.epochs.to_csv(out / "epochs.csv", index=False)
    path = out / "report.md"
    path.write_text("\n\n".join(parts) + "\n")
    return path


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, like the other input errors
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="report", description=__doc__.split("\n\n")[1])
    parser.add_argument("run_dir", metavar="RUN_DIR", help="experiment directory: STORAGE/NAME")
    parser.add_argument("--out", metavar="DIR", help="where to write (default: RUN_DIR/report)")
    parser.add_argument("--format", choices=FORMATS, default="md", help="also write each table as csv or tex")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        exp = load(args.run_dir)
        path = write_report(exp, Path(args.out) if args.out else exp.path / "report", args.format)
    except (UserError, OSError) as exc:
        print(f"report: error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
