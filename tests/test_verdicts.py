"""Every verdict sentence of the report agrees with the table it comes from (issue 38, item 1).

A report is built by analysis.report.sections from frames with planted effects that hold on every
seed: a clear difference and a clear null in every table that has verdicts (main effects, the recipe
interactions, the stage steps, the arms that did not learn, the confirm phase's declared questions).
Each table row is read as a reader reads it (its Holm p, its TOST p, its verdict column) and the
sentence generated for it must give the same verdict; no sentence offers seeds for an equivalence
margin that its interval already excludes.
"""
import json
import re

import numpy as np
import pandas as pd
import pytest

from analysis.report import sections
from analysis.stages import PAPER_STAGE_ACCURACY
from study.config import TrainConfig
from study.load import Experiment, load

VERDICT = re.compile(r"\*\*(supported|not supported|inconclusive)[^*]*\*\*")


def experiment(tmp_path, rows: list[dict], sweep: dict) -> Experiment:
    """An experiment from a report's frames (trials.csv, epochs.csv, sweep.json): every trial finished,
    three epochs, 2,000 validation images."""
    defaults = TrainConfig(dataset="fashion-mnist").to_dict()
    trials = pd.DataFrame([{**defaults, "trial_id": f"t{i:03d}", "phase": "screen", "stop_reason": "finished",
                            "ray_status": "TERMINATED", "error": "", "trial_dir": f"t{i:03d}", "val_images": 2000,
                            "epochs_run": 3, "best_epoch": 3, "test_images": 10000, "params": 1e6, "flops": 1e8,
                            "wall_time_s": 10.0, "last_epoch": 3, "node": "", "timing": "", **row}
                           for i, row in enumerate(rows)])
    trials["best_val_acc"] = trials["test_acc"] + 0.5
    trials["final_val_acc"] = trials["best_val_acc"]
    epochs = pd.DataFrame([{"trial_id": t, "epoch": e, "val_acc": v * e / 3, "train_loss": 1.0 / e,
                            "val_loss": 1.0 / e, "status": "finished" if e == 3 else "running"}
                           for t, v in zip(trials["trial_id"], trials["best_val_acc"]) for e in (1, 2, 3)])
    trials.to_csv(tmp_path / "trials.csv", index=False)
    epochs.to_csv(tmp_path / "epochs.csv", index=False)
    (tmp_path / "sweep.json").write_text(json.dumps(sweep))
    return load(tmp_path)


def verdicts_by_section(exp: Experiment) -> tuple[dict, list[str]]:
    found = sections(exp)
    tables = {s.name: s.table for s in found if s.table is not None}
    text = next(s.text for s in found if s.title == "Verdicts")
    return tables, [line for line in text.splitlines() if line.startswith("- ")]


def read_row(row) -> str:
    """A main-effect or stage-step row as its table shows it: Holm p below 0.05 with the claim's sign,
    or TOST within the margin (Holm), else neither."""
    if row["p_holm"] < 0.05:
        return "supported"
    return "not supported" if row.get("p_equivalent_holm", np.nan) < 0.05 else "inconclusive"


def said(sentence: str) -> str:
    return VERDICT.search(sentence).group(1)


def no_seeds_beyond_the_margin(sentences: list[str], margin: float) -> None:
    for sentence in sentences:
        interval = re.search(r"\[(-?[\d.]+), (-?[\d.]+)\]", sentence)
        if interval and "seeds would" in sentence:
            low, high = map(float, interval.groups())
            assert not (low > margin or high < -margin), sentence


@pytest.mark.parametrize("base_seed", [0, 10, 20, 30, 40])
def test_a_factorial_screens_sentences_agree_with_its_tables(tmp_path, base_seed):
    """attention=channel helps by 6 points with the holistic recipe only (clear difference, supported
    recipe claim); dsconv does nothing (a clear null: within ±0.5); attention=simple stays at chance."""
    rng = np.random.default_rng(base_seed)
    rows = []
    for recipe in ("baseline", "holistic"):
        for attention in ("none", "channel", "simple"):
            for dsconv in (False, True):
                for seed in range(4):
                    if attention == "simple":
                        acc = 10.0 + rng.normal(0, 0.2)
                    else:
                        acc = 80 + 6 * (attention == "channel") * (recipe == "holistic") + 0.5 * seed
                        acc += rng.normal(0, 0.1)
                    rows.append({"recipe": recipe, "attention": attention, "dsconv": dsconv, "seed": seed,
                                 "test_acc": acc})
    sweep = {"plan": {"search": "grid", "scheduler": "fifo", "max_t": 3},
             "params": {"recipe": {"grid": ["baseline", "holistic"]},
                        "attention": {"grid": ["none", "channel", "simple"]}, "dsconv": {"grid": [False, True]},
                        "seed": {"grid": [0, 1, 2, 3]}}}
    tables, sentences = verdicts_by_section(experiment(tmp_path, rows, sweep))
    main, inter, chance = tables["main_effects"], tables["interactions"], tables["did_not_learn"]
    assert len(sentences) == len(chance) + len(inter) + len(main)

    def sentence_of(start: str) -> str:
        (found,) = [s for s in sentences if s.startswith(start)]
        return found

    for row in main.to_dict("records"):
        sentence = sentence_of(f"- {row['factor']}={row['level']} (against {row['reference']}) changes")
        assert said(sentence) == read_row(row), sentence
    read = dict(zip(main["factor"], main.to_dict("records")))
    assert read_row(read["attention"]) == "supported" and read_row(read["recipe"]) == "supported"
    assert read_row(read["dsconv"]) == "not supported"  # shown within ±0.5 (TOST, Holm over the table)
    assert "paired over 4 seeds" in sentence_of("- dsconv=True")  # the seeds, not the 16 trials at the level
    for row in inter.to_dict("records"):
        sentence = sentence_of(f"- The study's claim that {row['factor']}={row['level']} helped only with the "
                               f"{row['recipe']} recipe")
        assert said(sentence) == row["verdict"], sentence
    verdicts = dict(zip(inter["factor"], inter["verdict"]))
    assert verdicts["attention"] == "supported" and verdicts["dsconv"] != "supported"
    for row in chance.to_dict("records"):
        sentence = sentence_of(f"- recipe={row['recipe']} attention={row['attention']} dsconv={row['dsconv']} stays")
        assert said(sentence) == ("supported" if row["p_at_chance_holm"] < 0.05 else "inconclusive"), sentence
    assert set(chance["attention"]) == {"simple"} and (chance["p_at_chance_holm"] < 0.05).all()
    no_seeds_beyond_the_margin(sentences, 0.5)


@pytest.mark.parametrize("base_seed", [0, 10, 20, 30, 40])
def test_the_stage_steps_sentences_agree_with_their_table(tmp_path, base_seed):
    """augment_finetune adds 8 points (clear difference); simple_attention changes nothing (a clear null)."""
    rng = np.random.default_rng(base_seed)
    planted = {"baseline": 70.0, "augment_finetune": 78.0, "simple_attention": 78.0}
    rows = [{"stage": stage, "seed": seed, "test_acc": acc + 0.5 * seed + rng.normal(0, 0.05)}
            for stage, acc in planted.items() for seed in range(4)]
    sweep = {"plan": {"search": "grid", "scheduler": "fifo", "max_t": 3},
             "params": {"stage": {"grid": list(planted)}, "seed": {"grid": [0, 1, 2, 3]}}}
    tables, sentences = verdicts_by_section(experiment(tmp_path, rows, sweep))
    steps = tables["stage_steps"]
    assert list(steps["step"]) == ["baseline -> augment_finetune", "augment_finetune -> simple_attention"]
    step_sentences = [s for s in sentences if "stage improves test accuracy" in s]
    assert len(step_sentences) == len(steps)
    for row, sentence in zip(steps.to_dict("records"), step_sentences):
        assert said(sentence) == read_row(row), sentence
    assert [said(s) for s in step_sentences] == ["supported", "not supported"]  # the null: within ±0.5 (TOST)
    assert set(PAPER_STAGE_ACCURACY) >= set(planted)
    no_seeds_beyond_the_margin(sentences, 0.5)


@pytest.mark.parametrize("planted, expected", [(5.0, "supported"), (0.0, "not supported")])
def test_a_declared_questions_sentence_agrees_with_its_row(tmp_path, planted, expected):
    """The confirm phase's question (the screen's best, attention=channel, against none) with a cost of 5
    points on every seed (settled: supported), and with none (equivalent within ±0.5: not supported)."""
    from analysis import confirm
    from analysis.render import Section
    from analysis.verdicts import verdict_section
    from study.questions import declare
    from tests.test_analysis_phases import CONFIRM_SPEC, frames_experiment

    rng = np.random.default_rng(0)
    seeds = [1, 2, 3, 4, 5, 6]
    rows = [(a, s, 80.0 + planted * (a == "channel") + 0.7 * s + rng.normal(0, 0.02))
            for a in ("channel", "none") for s in seeds]
    spec = {**CONFIRM_SPEC, "seeds": seeds, "max_seeds": 6, "margin": 0.5, "alpha": 0.05,
            "looks": [{"dir": "confirm", "seeds": seeds, "arms": [0, 1], "cap": 6}],
            "questions": declare(CONFIRM_SPEC["arms"], ["attention"], {"attention": "none"}, 0.5)}
    exp = frames_experiment(tmp_path, rows, {"attention": "none"})
    result = confirm.confirmed(Experiment(exp.path, exp.trials, exp.epochs, exp.axes,
                                          {"phases": {**exp.sweep["phases"], "confirm": spec}}))
    (row,) = result.questions.to_dict("records")
    assert row["verdict"].startswith(expected)
    low, high = row["low"], row["high"]
    assert (low > 0) if expected == "supported" else (-0.5 < low and high < 0.5)  # the interval shows it
    text = verdict_section([Section("Declared questions", "", "questions", result.questions)], 0.5, result.error).text
    (sentence,) = [line for line in text.splitlines() if line.startswith("- ")]
    assert said(sentence) == expected and f"[{low:.2f}, {high:.2f}]" in sentence


def test_the_equivalence_test_from_an_estimate_is_statsmodels_tost():
    """analysis.contrasts.equivalence (a pooled row's TOST from its estimate, se and df) against
    statsmodels' one-sample TOST on the same numbers, inside and beyond the margin."""
    from statsmodels.stats.weightstats import DescrStatsW

    from analysis.contrasts import equivalence

    for values in ([0.1, -0.2, 0.05, 0.15, -0.05], [1.2, 0.7, 0.9, 1.4, 1.1]):
        summary = DescrStatsW(np.array(values))
        got = equivalence(summary.mean, summary.std_mean, len(values) - 1, 0.5)
        assert got["p_equivalent"] == pytest.approx(summary.ttost_mean(-0.5, 0.5)[0])
        low, high = summary.tconfint_mean(alpha=0.1)
        assert got["margin_shown"] == pytest.approx(max(abs(low), abs(high)))
