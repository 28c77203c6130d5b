"""The report's figures: short titles with their caption beneath, learning curves that never average
only the survivors of an early stop, chance marked, no Pareto front on latency measured beside other
trials, and the confirm phase's figures written from a committed real experiment."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import plots
from analysis.pareto import arm_summary
from analysis.report import sections, write_report
from study.load import load

ROOT = Path(__file__).resolve().parent.parent


def curves_frames():
    """Two recipes of two trials each: one baseline trial stopped after epoch 2, the others ran 5."""
    last = {"a0": 2, "a1": 5, "b0": 5, "b1": 5}
    epochs = pd.DataFrame([{"trial_id": t, "epoch": e, "val_acc": 20.0 + 10 * e + (30 if t == "a1" else 0),
                            "train_loss": 2.0 / e, "val_loss": 2.1 / e}
                           for t, n in last.items() for e in range(1, n + 1)])
    trials = pd.DataFrame({"trial_id": list(last), "recipe": ["baseline", "baseline", "holistic", "holistic"],
                           "dataset": "fashion-mnist", "stop_reason": ["scheduler_stopped", "finished", "finished",
                                                                       "finished"]})
    return epochs, trials


def test_a_levels_mean_stops_at_the_last_epoch_all_its_trials_reached_and_chance_is_marked():
    epochs, trials = curves_frames()
    fig = plots.learning_curves(epochs, trials, ("val_acc",), "recipe")
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    baseline = lines["recipe=baseline: mean of 2 to epoch 2"]
    # the mean of both baseline trials at epochs 1-2 only: a1 alone at 3-5 (30 points higher) is not a mean
    assert list(baseline.get_xdata()) == [1, 2] and list(baseline.get_ydata()) == [45.0, 55.0]
    assert list(lines["recipe=holistic: mean of 2 to epoch 5"].get_xdata()) == [1, 2, 3, 4, 5]
    assert list(lines["chance (10%)"].get_ydata()) == [10.0, 10.0]  # fashion-mnist: 10 classes
    text = " ".join(t.get_text() for t in fig.texts).replace("\n", " ")
    assert "n = 4" in text and "not carried on over the trials left" in text
    loss = plots.learning_curves(epochs, trials, ("train_loss", "val_loss"), "recipe")
    assert not any("chance" in line.get_label() for ax in loss.axes for line in ax.get_lines())


def test_latency_measured_beside_other_trials_has_no_front_and_the_panel_says_so():
    rng = np.random.default_rng(3)
    trials = pd.DataFrame({"arm": np.repeat(list("abcd"), 2), "test_acc": rng.uniform(80, 90, 8),
                           "params": np.repeat([48_058, 59_000, 187_000, 740_554], 2),
                           "flops": np.repeat([3.6e6, 5e6, 1.8e7, 2.1e8], 2),
                           "latency_ms_b1": rng.uniform(1, 9, 8), "timing": "shared"})
    arms = arm_summary(trials, ["arm"])
    assert "pareto_params" in arms and "pareto_latency_ms_b1" not in arms
    fig = plots.pareto_plot(arms)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[2] == "measured while trials shared the machine: no front" and titles[0] == ""
    alone = arm_summary(trials.assign(timing="alone"), ["arm"])
    assert "pareto_latency_ms_b1" in alone


def test_a_narrow_cost_axis_says_by_how_much_the_arms_differ():
    trials = pd.DataFrame({"arm": list("abc"), "test_acc": [80.0, 81.0, 82.0], "params": [1000, 1002, 1004],
                           "flops": [1e6, 2e6, 4e6]})
    fig = plots.pareto_plot(arm_summary(trials, ["arm"]), costs=("params", "flops"))
    assert fig.axes[0].get_title() == "the arms differ by 0.4% of the mean" and fig.axes[1].get_title() == ""


@pytest.fixture(scope="module")
def ablation():
    """The committed real ablation (Fashion-MNIST; successive-halving screen, then a confirm phase)."""
    return load(ROOT / "results" / "ablation")


def test_every_figure_of_a_real_report_has_a_short_title_and_a_caption(ablation):
    figures = [(s.name, s.figure) for s in sections(ablation) if s.figure is not None]
    names = [name for name, _ in figures]
    for expected in ("main_effects", "interactions", "confirmed_arms", "screen_vs_confirm", "per_class",
                     "questions", "learning_curves", "stopping", "pareto", "lenth"):
        assert expected in names
    for name, fig in figures:
        titles = [fig._suptitle.get_text()] if fig._suptitle else []
        titles += [ax.get_title() for ax in fig.axes if ax.get_title()]
        assert titles and all(len(t) <= 80 and "\n" not in t for t in titles), (name, titles)
        assert any(len(t.get_text()) > 40 for t in fig.texts), name  # the caption


def test_the_report_writes_and_links_the_confirm_phases_figures(ablation, tmp_path):
    report = write_report(ablation, tmp_path).read_text()
    for name in ("confirmed_arms", "questions", "screen_vs_confirm", "per_class", "interactions"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
        assert f"({name}.png)" in report
