"""Real Ray Tune experiments on CPU through sweep/run.py: the smoke space end to end, TensorBoard
read back, ASHA stopping a clear loser, Optuna proposing and recording trials, errors, the driver
killed mid-run and resumed (test_sweep_confirm.py), and a real-data sweep on Fashion-MNIST.

One local Ray (2 CPUs, no dashboard, on 127.0.0.1: conftest sets RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0)
serves the tests.
"""
import json
from pathlib import Path

import pytest
import ray
from ray import tune

from study.layout import SWEEP_FILE, TRIAL_CONFIG_FILE
from sweep import run
from tests.helpers import needs_fashion_mnist

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def results_of(experiment: Path) -> tune.ResultGrid:
    """The screen phase's results (sweep.planning): these sweeps have that one phase."""
    analysis = tune.ExperimentAnalysis(str(experiment / "screen"), default_metric="val_acc", default_mode="max")
    return tune.ResultGrid(analysis)


def rows_of(trial_dir: str) -> list[dict]:
    return [json.loads(line) for line in Path(trial_dir, "result.json").read_text().splitlines()]


@pytest.fixture(scope="module")
def smoke_experiment(local_ray, tmp_path_factory):
    storage = tmp_path_factory.mktemp("sweeps")
    code = run.main(["--space", "smoke", "--storage-path", str(storage), "--name", "smoke"])
    return code, storage / "smoke"


def test_smoke_space_runs_end_to_end(smoke_experiment, capsys):
    code, experiment = smoke_experiment
    assert code == 0
    results = results_of(experiment)
    assert len(results) == 2 and results.num_errors == 0
    for result in results:
        assert result.metrics["epoch"] == 2 and result.metrics["status"] == "finished"
        assert result.metrics["test_acc"] > 0 and result.config["attention"] in ("none", "channel")
        assert len(list(Path(result.path).glob("checkpoint_*"))) == 2  # one per epoch, two kept
        record = json.loads(Path(result.path, TRIAL_CONFIG_FILE).read_text())
        assert record["config"]["attention"] == result.config["attention"] and "versions" in record
    sweep = json.loads((experiment / SWEEP_FILE).read_text())
    assert sweep["space_name"] == "smoke" and sweep["expected_trials"] == 2
    assert sweep["plan"]["scheduler"] == "asha" and sweep["versions"]["ray"] == ray.__version__


def test_an_asha_screen_started_its_arms_in_the_recorded_shuffled_order(smoke_experiment):
    from study.load import load

    experiment = smoke_experiment[1]
    points = json.loads((experiment / SWEEP_FILE).read_text())["plan"]["points"]
    assert sorted(map(repr, points)) == sorted(map(repr, [{"attention": a} for a in ("none", "channel")]))
    screen = load(experiment).phase("screen").trials.sort_values("trial_id")
    assert screen[["attention"]].to_dict("records") == points  # trial k is the k-th arm drawn


def test_tensorboard_events_hold_the_per_epoch_val_accuracy_and_hparams(smoke_experiment):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    for result in results_of(smoke_experiment[1]):
        events = EventAccumulator(result.path)
        events.Reload()
        logged = [round(e.value, 4) for e in events.Scalars("ray/tune/val_acc")]
        assert logged == [round(row["val_acc"], 4) for row in rows_of(result.path)]
        assert len(logged) == 2
        start = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        hparams = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
        assert hparams["attention"].string_value == result.config["attention"]
        # every knob, fixed ones too (the space fixes lr; optimizer is a default), as train.py writes them
        assert hparams["lr"].number_value == 0.05 and hparams["optimizer"].string_value == "sgd"
        tags = set(events.Tags()["scalars"])
        assert {"ray/tune/best_val_acc", "ray/tune/test_acc_class/rings-low"} <= tags
        assert not {"ray/tune/done", "ray/tune/should_checkpoint", "ray/tune/time_this_iter_s"} & tags
        # constants once, among the HParams, not a flat scalar every epoch
        assert not {"ray/tune/params", "ray/tune/flops", "ray/tune/test_images"} & tags
        assert hparams["params"].number_value == result.metrics["params"] and hparams["test_images"].number_value > 0
        # the sweep's experiment marks its searched axis: TensorBoard's own sort puts it first among
        # the five columns it selects by default (else: activation, augment, batch_norm, ...)
        from tensorboard.plugins.hparams.backend_context import _sort_and_reduce_to_hparams_limit

        content = events.PluginTagToContent("hparams")["_hparams_/experiment"]
        experiment = plugin_data_pb2.HParamsPluginData.FromString(content).experiment
        assert [h.name for h in experiment.hparam_infos if h.differs] == ["attention"]
        _sort_and_reduce_to_hparams_limit(experiment, 5)
        assert experiment.hparam_infos[0].name == "attention"
        assert {m.name.tag for m in experiment.metric_infos} >= {"ray/tune/best_val_acc", "ray/tune/test_acc"}


def test_asha_stops_a_clear_loser_early(local_ray, tmp_path):
    space = tmp_path / "loser.yaml"
    space.write_text("description: lr 0 never learns; ASHA should stop it at its first rung\n"
                     "scheduler: asha\nparams:\n  dataset: synthetic\n  subset: 1024\n  val_fraction: 0.5\n"
                     "  width: 0.25\n  batch_size: 32\n  augment: none\n  dropout: 0.0\n  init: kaiming\n"
                     "  scheduler: none\n  measure_latency: false\n  epochs: 3\n  lr: {grid: [0.05, 0.0]}\n")
    # One trial at a time, the learner first: the loser meets the learner's score at the rung.
    argv = ["--space", str(space), "--no-confirm", "--grace-period", "2", "--reduction-factor", "2",
            "--max-concurrent", "1", "--storage-path", str(tmp_path), "--name", "asha"]
    assert run.main(argv) == 0
    by_lr = {r.config["lr"]: r.metrics for r in results_of(tmp_path / "asha")}
    assert by_lr[0.05]["training_iteration"] == 3 and by_lr[0.05]["status"] == "finished"
    assert by_lr[0.0]["training_iteration"] == 2 and by_lr[0.0]["status"] == "running"


def test_optuna_proposes_and_records_trials(local_ray, tmp_path):
    import optuna

    # 1,024 of --smoke-test's 4,096 images: what is checked here is what Optuna proposed and recorded
    argv = ["--space", "hparams", "--smoke-test", "--no-confirm", "--samples", "3", "--set", "subset=1024",
            "--storage-path", str(tmp_path), "--name", "tpe"]
    assert run.main(argv) == 0
    results = results_of(tmp_path / "tpe")
    assert len(results) == 3 and results.num_errors == 0
    lrs = {r.config["lr"] for r in results}
    assert len(lrs) == 3 and all(1e-3 <= lr <= 0.4 for lr in lrs)
    study = optuna.load_study(study_name="tpe", storage=f"sqlite:///{tmp_path / 'tpe' / 'optuna.db'}")
    assert len(study.trials) == 3
    assert {t.params["lr"] for t in study.trials} == lrs
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_gpus_per_trial_without_a_gpu_is_a_one_line_error(local_ray, tmp_path, capsys):
    code = run.main(["--space", "smoke", "--gpus-per-trial", "0.25", "--storage-path", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("run.py: error: --gpus-per-trial 0.25") and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_every_trial_erroring_exits_1_and_counts_the_errors(local_ray, tmp_path, capsys):
    argv = ["--space", "smoke", "--set", f"init_from={tmp_path / 'missing.pt'}",
            "--storage-path", str(tmp_path), "--name", "broken"]
    assert run.main(argv) == 1
    assert "2 trials: 2 errored" in capsys.readouterr().out
    assert results_of(tmp_path / "broken").num_errors == 2


@needs_fashion_mnist()
def test_real_data_sweep_on_a_fashion_mnist_subset(local_ray, tmp_path):
    space = tmp_path / "fashion.yaml"
    # 16x16 (resized): a quarter of the compute per image, and it learns more in 2 epochs than at 32x32
    space.write_text("params:\n  dataset: fashion-mnist\n  image_size: 16\n  subset: 768\n  val_fraction: 0.25\n"
                     "  width: 0.25\n"
                     "  batch_size: 32\n  augment: none\n  dropout: 0.0\n  init: kaiming\n  scheduler: none\n"
                     "  measure_latency: false\n  epochs: 2\n  lr: {grid: [0.0, 0.01, 0.05]}\n")
    argv = ["--space", str(space), "--scheduler", "fifo", "--no-confirm", "--storage-path", str(tmp_path),
            "--name", "fashion"]
    assert run.main(argv) == 0
    results = results_of(tmp_path / "fashion")
    assert len(results) == 3 and results.num_errors == 0
    scores = sorted(r.metrics["best_val_acc"] for r in results)
    assert scores[-1] > scores[0] + 10 and scores[-1] > 30  # 10 classes: chance is 10%
    assert all(r.metrics["test_images"] == 10000 for r in results)


def test_a_worker_ended_inside_a_weakref_callback_prints_no_traceback(capsys):
    """Ray's sys.exit(1) for an idle worker, raised inside a weakref callback, reached the driver's console
    as "Exception ignored ... SystemExit: 1": the trial worker's unraisable hook drops that case only."""
    import sys
    import weakref

    import sweep.trainable  # noqa: F401  (installs the hook, as in every trial worker)

    assert sys.unraisablehook is sweep.trainable.ignore_exit_in_callbacks

    def exit_now(_):
        raise SystemExit(1)

    def fail_now(_):
        raise ValueError("a real error")

    class Thing:
        pass

    for callback in (exit_now, fail_now):
        thing = Thing()
        ref = weakref.ref(thing, callback)
        del thing  # the callback runs now; its exception is unraisable
        assert ref() is None
    err = capsys.readouterr().err
    assert "SystemExit" not in err and "ValueError: a real error" in err


def test_relative_paths_in_a_sweep_are_made_absolute_before_any_trial_runs(local_ray, tmp_path, monkeypatch):
    """Issue 27, class 5: a relative image folder worked in train.py and failed in every sweep trial
    ('imagefolder: /tmp/ray/.../working_dirs/train_trial_.../imgs is not a directory': Ray runs each
    trial in its own directory). The driver resolves it, and a relative --init-from, once. Class 6's
    valid edge inputs in the same sweep: three images per class, and --confirm-top above the number
    of arms (the confirm phase takes the arms there are)."""
    from study.load import load
    from sweep.planning.screen import absolute_paths
    from tests.helpers import image_folder

    image_folder(tmp_path / "imgs", per_class=3)
    monkeypatch.chdir(tmp_path)
    assert absolute_paths({"dataset": {"grid": ["imagefolder:imgs", "synthetic"]}, "init_from": "ckpt/x.pt"}) == {
        "dataset": {"grid": [f"imagefolder:{tmp_path / 'imgs'}", "synthetic"]}, "init_from": str(tmp_path / "ckpt/x.pt")}
    assert run.main(["--space", "smoke", "--dataset", "imagefolder:imgs", "--set", "subset=0", "val_fraction=0.34",
                     "--epochs", "1", "--confirm-top", "50", "--confirm-seeds", "2", "--max-seeds", "2",
                     "--storage-path", "runs", "--name", "rel"]) == 0
    trials = load(tmp_path / "runs" / "rel").trials
    assert (trials["phase"] == "screen").sum() == 2 and (trials["phase"] == "confirm").sum() == 2 * 2
    assert set(trials["stop_reason"]) == {"finished"}
