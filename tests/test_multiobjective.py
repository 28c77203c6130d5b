"""Multi-objective search: the front (checked against a brute force), the flags' rules, and a real
small sweep (Optuna's NSGA-II through Ray Tune) whose study, latency-alone record and report agree."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from study.front import front, objective_front
from study.layout import read_latency_alone
from study.load import load
from sweep import run
from tests.helpers import plan

ROOT = Path(__file__).resolve().parent.parent


def brute_force(frame, objectives):
    sign = {"max": 1, "min": -1}
    rows = [[r[c] * sign[d] for c, d in objectives] for r in frame.to_dict("records")]
    out = []
    for i, a in enumerate(rows):
        if any(np.isnan(a)):
            out.append(False)
            continue
        out.append(not any(all(b_ >= a_ for a_, b_ in zip(a, b)) and any(b_ > a_ for a_, b_ in zip(a, b))
                           for j, b in enumerate(rows) if j != i and not any(np.isnan(b))))
    return out


@pytest.mark.parametrize("objectives", [[("acc", "max"), ("flops", "min")],
                                        [("acc", "max"), ("flops", "min"), ("latency", "min")],
                                        [("acc", "min"), ("flops", "max")]])
def test_the_front_is_the_non_dominated_set(objectives):
    rng = np.random.default_rng(len(objectives))
    frame = pd.DataFrame({"acc": rng.integers(0, 6, 60).astype(float), "flops": rng.integers(0, 6, 60).astype(float),
                          "latency": rng.normal(size=60)})
    frame.loc[3, "acc"] = np.nan
    assert front(frame, objectives).tolist() == brute_force(frame, objectives)
    assert not front(frame, objectives)[3]


def test_latency_measured_alone_replaces_the_in_trial_figure_only_when_every_trial_has_it():
    ended = pd.DataFrame({"trial_id": ["a", "b"], "best_val_acc": [80.0, 80.0], "latency_ms_b1": [1.0, 2.0]})
    alone = {"trials": {"a": {"latency_ms_b1": 3.0, "latency_ms_b32": 9.0},
                        "b": {"latency_ms_b1": 1.5, "latency_ms_b32": 5.0}}}
    objectives = [["best_val_acc", "max"], ["latency_ms_b1", "min"]]
    assert objective_front(ended, objectives)["pareto"].tolist() == [True, False]
    frame = objective_front(ended, objectives, alone)
    assert frame["pareto"].tolist() == [False, True] and frame.attrs["objectives"][1][0] == "latency_alone_ms_b1"
    partial = objective_front(ended, objectives, {"trials": {"a": alone["trials"]["a"]}})
    assert partial["pareto"].tolist() == [True, False]


@pytest.mark.parametrize("args, words", [
    (["--objectives", "test_acc:max,flops:min"], "on the test set"),
    (["--objectives", "accuracy:max,flops:min"], "not a metric every trial reports"),
    (["--objectives", "best_val_acc:up,flops:min"], "must be min or max"),
    (["--objectives", "best_val_acc:max"], "two or more different metrics"),
    (["--objectives", "best_val_acc:max,flops:min", "--search", "grid"], "cannot search several objectives"),
    (["--objectives", "best_val_acc:max,latency_ms_b1:min", "--set", "measure_latency=false"],
     "needs measure_latency=true"),
    # the note on ASHA is printed only once every check has passed: an error stays one line
    (["--objectives", "best_val_acc:max,flops:min", "--scheduler", "asha"], "Optuna samples, it does not enumerate"),
])
def test_bad_objectives_are_one_line_exit_2(args, words, capsys):
    assert run.main(["--space", "smoke", "--dry-run", *args]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1


def test_a_multi_objective_search_runs_every_trial_to_its_end(capsys):
    assert run.main(["--space", "embedded", "--dry-run", "--samples", "4", "--scheduler", "asha"]) == 0
    captured = capsys.readouterr()
    assert "a multi-objective search runs every trial to its end (fifo)" in captured.err
    assert "fifo scheduler" in captured.out and "objectives: best_val_acc (max), flops (min)" in captured.out


def test_the_multi_objective_searcher_pickles_as_ray_tune_saves_it(tmp_path):
    # Ray Tune pickles the searcher into tuner.pkl; Optuna 5.1's NSGA-II holds a lock (sweep/sampler.py)
    import ray.cloudpickle as cloudpickle

    from sweep.tuner import make_searcher

    planned = plan(["--space", "embedded", "--samples", "4", "--storage-path", str(tmp_path),
                    "--objectives", "best_val_acc:max,flops:min"])[1]
    Path(planned.experiment_dir).mkdir(parents=True)  # where the driver keeps the study (optuna.db)
    searcher = make_searcher(planned)
    loaded = cloudpickle.loads(cloudpickle.dumps(searcher))
    sampler = loaded._sampler
    assert type(sampler).__name__ == "NSGAIISampler" and sampler._get_generation_key() == "NSGAIISampler:generation"
    with sampler._thread_lock:  # a working lock again
        pass


@pytest.mark.slow
def test_a_real_multi_objective_sweep_records_both_objectives_and_its_front(tmp_path):
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "ABLATION_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.run([sys.executable, "sweep/run.py", "--space", "embedded", "--smoke-test", "--samples", "4",
                           "--objectives", "best_val_acc:max,latency_ms_b1:min", "--set", "subset=1024",
                           "--storage-path", str(tmp_path),
                           "--name", "mo"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = tmp_path / "mo"
    plan = json.loads((run_dir / "sweep.json").read_text())["plan"]
    assert plan["objectives"] == [["best_val_acc", "max"], ["latency_ms_b1", "min"]] and plan["scheduler"] == "fifo"
    trials = load(run_dir).trials
    assert len(trials) == 4 and set(trials["stop_reason"]) == {"finished"}
    # Optuna's study was told both objectives of every trial, as the trials reported them.
    import optuna

    study = optuna.load_study(study_name="mo", storage=f"sqlite:///{run_dir}/optuna.db")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    told = sorted(tuple(t.values) for t in study.trials)
    assert told == sorted(zip(trials["best_val_acc"], trials["latency_ms_b1"]))
    # Latency measured alone for every trial (latency is an objective); the front uses it.
    alone = read_latency_alone(run_dir)
    assert set(alone["trials"]) == set(trials["trial_id"]) and alone["threads"] == 1
    objective = [["best_val_acc", "max"], ["latency_alone_ms_b1", "min"]]
    frame = trials.assign(latency_alone_ms_b1=trials["trial_id"].map(
        lambda t: alone["trials"][t]["latency_ms_b1"]))
    expected = set(frame.loc[brute_force(frame, objective), "trial_id"])
    assert f"{len(expected)} of the 4 trials that ran to their end" in proc.stdout
    from analysis.report import write_report
    from study.load import load as load_exp

    report = write_report(load_exp(run_dir), tmp_path / "report").read_text()
    section = report.split("## Front of the objectives")[1].split("\n## ")[0]
    assert {t for t in trials["trial_id"] if f"| {t}" in section} == expected
    assert (tmp_path / "report" / "objective_front.png").is_file()
    again = write_report(load_exp(tmp_path / "report"), tmp_path / "again").read_text()  # from the frames
    assert again.split("## Front of the objectives")[1].split("\n## ")[0] == section.replace(str(run_dir), str(tmp_path / "report"))
    from deploy import choose as export  # --front of a multi-objective sweep: the same front

    assert {s.name for s in export.choose(run_dir, [], False, True, "flops")} == expected
    assert "Traceback" not in proc.stderr
