"""--design fraction (sweep.design): a resolution-IV fraction of a grid space, checked as a design
(balance, orthogonality, aliases), as a plan (the CLI's errors, the dry run), and as a real sweep
whose report gives main effects with intervals and names the aliased interactions."""
import itertools

import numpy as np
import pandas as pd
import pytest

from sweep import design, run
from sweep.spaces import SPACES
from tests.helpers import plan


def coded(arms: list[dict], axes: list[str], params: dict) -> np.ndarray:
    """Each two-level axis as -1/+1 (its first and second grid level) per arm."""
    return np.array([[1 if arm[a] == params[a]["grid"][1] else -1 for a in axes] for arm in arms])


@pytest.mark.parametrize("k", sorted(design.GENERATORS))
def test_the_fraction_is_resolution_four(k):
    """k two-level axes (and one three-level axis crossed in full): every main-effect column is
    balanced and orthogonal to every other main effect and to every two-factor interaction; the
    interactions the record names as aliased are exactly the identical columns."""
    axes = [f"x{i}" for i in range(k)]
    params = {"many": {"grid": ["a", "b", "c"]}, **{a: {"grid": [f"{a}0", f"{a}1"]} for a in axes}}
    arms, record = design.fraction(params, seed=3)
    x = coded(arms, axes, params)
    runs = 3 * 2 ** (k - len(design.GENERATORS[k]))
    assert len(arms) == record["arms"] == runs and len({tuple(sorted(a.items())) for a in arms}) == runs
    assert (x.sum(axis=0) == 0).all()
    two = {pair: x[:, pair[0]] * x[:, pair[1]] for pair in itertools.combinations(range(k), 2)}
    for i in range(k):
        assert all(x[:, i] @ x[:, j] == 0 for j in range(k) if j != i)
        assert all(x[:, i] @ column == 0 for column in two.values())  # resolution IV: main clear of 2FIs
    identical = {frozenset((p, q)) for p, q in itertools.combinations(two, 2) if (two[p] == two[q]).all()}
    letters = {axis: letter for letter, axis in record["two_level_axes"].items()}
    named = set()
    for chain in record["aliased_two_factor_interactions"]:
        members = [tuple(sorted(int(name[1:]) for name in term.split("×"))) for term in chain.split(" = ")]
        named |= {frozenset(pair) for pair in itertools.combinations(members, 2)}
    assert named == identical and set(letters) == set(axes)


def test_the_ablation_fraction_and_its_plan():
    params, settings, record = plan(["--space", "ablation", "--design", "fraction", "--epochs", "9"])
    assert settings.scheduler == "fifo" and len(settings.points) == settings.num_samples == 24
    assert record["expected_trials"] == 24 and record["design"]["generators"] == ["D = ABC"]
    assert record["design"]["aliased_two_factor_interactions"] == [
        "residual×dsconv = activation×recipe", "residual×activation = dsconv×recipe",
        "residual×recipe = dsconv×activation"]
    other = plan(["--space", "ablation", "--design", "fraction", "--search-seed", "1"])[1].points
    assert other != settings.points and sorted(map(str, other)) == sorted(map(str, settings.points))  # reordered


@pytest.mark.parametrize("argv,said", [
    (["--space", "ablation", "--design", "fraction", "--scheduler", "halving"], "runs every arm to its end"),
    (["--space", "hparams", "--design", "fraction"], "fraction of a grid space's arms"),
    (["--space", "stages", "--design", "fraction"], "needs 4 to 8 two-level grid axes"),
    (["--space", "ablation", "--design", "half"], "invalid choice"),
])
def test_a_design_that_cannot_run_is_one_line(argv, said, capsys):
    assert run.main([*argv, "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) <= 2 and said in err[-1] and "Traceback" not in "\n".join(err)


# Every arm learns, so the learning check (study.learning) leaves none out of the effects: the
# weakest, DSConv + channel attention + ReLU without residuals, reached 39-46% validation accuracy on
# 256 images over seeds 0-1 (train.py, one thread, an Intel Xeon), against chance 10% and the
# check's floor of 15% (at 3 epochs 27-30%; without batch norm at lr 0.05, 9-14%: at chance).
SPACE = """scheduler: fifo
params:
  dataset: synthetic
  subset: 1024
  val_fraction: 0.25
  width: 0.25
  batch_size: 32
  epochs: 4
  lr: 0.05
  scheduler: none
  init: kaiming
  augment: none
  dropout: 0.0
  measure_latency: false
  residual: {grid: [none, simple]}
  dsconv: {grid: [false, true]}
  activation: {grid: [relu, silu]}
  attention: {grid: [none, channel]}
"""


def test_a_fractional_sweep_runs_its_arms_to_the_end_and_reports_what_it_can_tell_apart(local_ray, tmp_path):
    """2^(4-1) arms x 2 seeds, four short epochs of synthetic data: 16 trials, all run to their end and
    all learn; the report names the design and its aliases, and gives every main effect an interval."""
    space = tmp_path / "four.yaml"
    space.write_text(SPACE)
    assert run.main(["--space", str(space), "--design", "fraction", "--samples", "2", "--no-confirm",
                     "--storage-path", str(tmp_path), "--name", "frac"]) == 0
    from analysis.report import sections
    from study.load import load

    exp = load(tmp_path / "frac")
    assert len(exp.trials) == 16 and set(exp.trials["stop_reason"]) == {"finished"}
    assert exp.trials.groupby(["residual", "dsconv", "activation", "attention"]).ngroups == 8
    found = {s.title: s for s in sections(exp)}
    assert "D = ABC" in found["Design of the screen"].text
    assert "residual×dsconv = activation×attention" in found["Design of the screen"].text
    assert "Arms that did not learn" not in found
    main = found["Main effects on test_acc"].table
    assert len(main) == 4 and main["ci_low"].notna().all() and (main["ci_low"] < main["effect"]).all()
    assert SPACES["ablation"]["params"]["recipe"]["grid"]  # the named space keeps its full grid
    pd.testing.assert_series_equal(exp.trials["seed"].value_counts().sort_index(), pd.Series(
        [8, 8], index=pd.Index([0, 1], name="seed"), name="count"))
