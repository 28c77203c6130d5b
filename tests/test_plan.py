"""sweep.planning (the screen as plain data: space, overrides, seeds, smoke limits, Plan; the
confirm phase as planned), checked on the named spaces without running anything."""
from study.config import TrainConfig
from study.layout import SCREEN
from study.trial import smoke_limits
from sweep.planning.phases import confirm_bound, fresh_seeds
from sweep.planning.plan import Plan
from sweep.spaces import SPACES
from sweep.vocabulary import max_epochs
from tests.helpers import plan


def test_smoke_limits_cap_squeezenet_width_and_finetuning_but_leave_resnets_whole():
    values = TrainConfig(finetune_epochs=5).to_dict()
    assert smoke_limits(values)["width"] == 0.25 and smoke_limits(values)["finetune_epochs"] == 1
    assert smoke_limits(TrainConfig(model="resnet18").to_dict())["width"] == 1.0


def test_max_epochs_follow_presets_overrides_and_smoke():
    assert plan(["--space", "stages"])[1].max_t == 30 + 5
    assert plan(["--space", "resnet-depth"])[1].max_t == 50
    assert plan(["--space", "ablation", "--epochs", "12"])[1].max_t == 12
    assert plan(["--space", "stages", "--smoke-test"])[1].max_t == 3  # 2 epochs + 1 of fine-tuning


def test_the_first_rung_comes_after_a_third_of_training_unless_given():
    from sweep.planning.screen import default_grace

    assert [default_grace(max_t) for max_t in (2, 3, 9, 30)] == [2, 2, 3, 10]  # at least 2
    assert plan(["--space", "ablation"])[1].grace_period == 10  # 30 epochs
    assert plan(["--space", "ablation", "--grace-period", "1"])[1].grace_period == 1


def test_smoke_test_cuts_any_space_to_a_few_trials():
    for name in SPACES:
        params, settings, record = plan(["--space", name, "--smoke-test"])
        assert 1 <= record["expected_trials"] <= 4, name
        assert params["dataset"] == "synthetic" and params["epochs"] == 2


def test_optuna_space_samples_trials_and_grid_space_seeds_arms():
    params, settings, record = plan(["--space", "hparams", "--samples", "7"])
    assert settings.search == "optuna" and settings.num_samples == 7 and record["expected_trials"] == 7
    assert "seed" not in params
    params, settings, record = plan(["--space", "stages", "--samples", "4"])
    assert params["seed"] == {"grid": [0, 1, 2, 3]} and settings.num_samples == 1


def test_the_record_plans_both_phases_and_the_confirm_seeds_are_fresh():
    params, settings, record = plan(["--space", "ablation", "--samples", "2"])
    assert isinstance(settings, Plan) and settings.phase_dir == SCREEN
    assert settings.tune_dir == f"{settings.experiment_dir}/screen" and settings.test_shown is False
    screen, confirm = record["phases"]["screen"], record["phases"]["confirm"]
    assert screen == {"dir": "screen", "expected_trials": 96,  # successive halving: its rungs (test_halving.py)
                      "rungs": [{"dir": "screen", "budget": 10, "expected_trials": 96},
                                {"dir": "screen-30ep", "budget": 30}]} and record["expected_trials"] == 96
    assert confirm["seeds"] == fresh_seeds(params, 3) == [2, 3, 4]  # above the screen's seeds 0 and 1
    assert confirm["factors"] == [k for k, v in params.items() if isinstance(v, dict) and k != "seed"]
    assert confirm_bound(params, confirm, settings.search) == 3 + len(confirm["factors"]) + 1
    _, settings, record = plan(["--space", "ablation", "--no-confirm"])
    assert list(record["phases"]) == ["screen"] and settings.test_shown is True


def test_max_epochs_of_a_space_counts_finetuning_of_every_reachable_preset():
    assert max_epochs({"stage": {"grid": ["baseline", "holistic"]}}, smoke=False) == 30 + 5
    assert max_epochs({"epochs": {"choice": [3, 7]}, "finetune_epochs": 2}, smoke=False) == 9
    assert max_epochs({"epochs": 4, "finetune_epochs": 3}, smoke=True) == 4 + 1  # smoke: one fine-tuning epoch


def test_an_asynchronous_grid_screen_starts_its_arms_in_an_order_drawn_from_the_search_seed():
    from sweep.planning.screen import launch_order
    from sweep.vocabulary import expand_grid, points_space

    params, settings, record = plan(["--space", "ablation", "--samples", "2", "--scheduler", "asha"])
    arms = [{k: v for k, v in arm.items() if k != "seed"} for arm in expand_grid({k: v for k, v in params.items()
                                                                                 if k != "seed"})]
    keyed = sorted(map(repr, settings.points))
    assert keyed == sorted(map(repr, [{k: a[k] for k in settings.points[0]} for a in arms]))  # each arm once
    assert settings.points != [{k: a[k] for k in settings.points[0]} for a in arms]  # not the grid's order
    assert settings.points == launch_order(params, 0) != launch_order(params, 1)  # a draw, repeatable
    assert settings.num_samples == 48 and record["expected_trials"] == 96  # each arm with its 2 seeds
    space = points_space(params, settings.points)
    assert space["attention"] == {"choice": params["attention"]["grid"]} and space["seed"] == {"grid": [0, 1]}
    for argv in (["--space", "ablation", "--scheduler", "fifo"], ["--space", "ablation"], ["--space", "hparams"]):
        assert plan(argv)[1].points is None  # the grid's order under FIFO and halving; a searcher's own draws


def test_max_concurrent_holds_for_every_searcher_a_phase_can_have():
    # Tune ignores TuneConfig's max_concurrent_trials when given a variant generator (a shuffled grid
    # screen, the confirm phase, random search): the generator must hold the limit itself.
    from sweep.tuner import make_searcher

    asha = ["--space", "ablation", "--scheduler", "asha"]
    for argv in (asha, ["--space", "ablation", "--search", "random", "--samples", "4"]):
        searcher = make_searcher(plan(argv + ["--max-concurrent", "3"])[1])
        assert searcher.max_concurrent == 3
    assert make_searcher(plan(asha)[1]).max_concurrent == 0  # Tune's "no limit"
