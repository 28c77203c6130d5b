"""Named spaces, bundles, the YAML vocabulary and the CLI's input errors (no Ray cluster needed)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ray import tune

from study.config import CHOICES, ConfigError, TrainConfig, field_names
from study.trial import BUNDLES, BY_MODEL, RECIPES, STAGES
from sweep import run
from sweep import vocabulary as vocab
from sweep.planning.configs import check_trials, trial_config
from sweep.spaces import SPACES
from sweep.vocabulary import max_epochs
from tests.helpers import FASHION_MNIST, plan

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", list(SPACES))
def test_every_key_of_every_space_is_a_field_or_a_bundle(name):
    allowed = set(field_names()) | set(BUNDLES)
    assert set(SPACES[name]["params"]) <= allowed


@pytest.mark.parametrize("bundle", list(BUNDLES))
def test_every_key_of_every_preset_is_a_field(bundle):
    for preset in BUNDLES[bundle].values():
        assert set(preset) - {BY_MODEL} <= set(field_names())
        for model, overrides in preset.get(BY_MODEL, {}).items():
            assert model in CHOICES["model"] and overrides and set(overrides) <= set(field_names())
            assert "model" not in overrides


@pytest.mark.parametrize("name", list(SPACES))
def test_every_named_space_resolves_to_valid_trials_and_models(name):
    loaded_name, space = vocab.load_space(name)
    params, num_samples = vocab.add_seeds(space["params"], space["search"], 2)
    configs = check_trials(params, False, exhaustive=space["search"] == "grid", source=name)
    vocab.check_arms(configs, name)
    assert loaded_name == name and all(isinstance(c, TrainConfig) for c in configs)


def test_stages_are_cumulative_and_holistic_is_the_studys_recipe():
    order = list(STAGES)
    assert order == ["baseline", "augment_finetune", "simple_attention", "residual_dropout", "holistic"]
    base = trial_config({"stage": "baseline"})
    assert (base.batch_norm, base.activation, base.augment, base.scheduler, base.optimizer) == \
        (False, "relu", "none", "none", "sgd")
    assert base.dropout == 0.5  # torchvision's SqueezeNet, the study's baseline, has it
    s2 = trial_config({"stage": "augment_finetune"})
    assert s2.augment == "paper" and s2.finetune_epochs > 0 and s2.finetune_hard_classes == 3
    assert trial_config({"stage": "simple_attention"}).attention == "simple"
    s4 = trial_config({"stage": "residual_dropout"})
    assert s4.residual == "simple" and s4.dropout == 0.5 and s4.attention == "simple"
    s3 = trial_config({"stage": "simple_attention"}).to_dict()
    assert {k for k, v in s4.to_dict().items() if s3[k] != v} == {"residual"}
    h = trial_config({"stage": "holistic"})
    assert (h.attention, h.dsconv, h.activation, h.scheduler, h.init, h.batch_norm) == \
        ("channel", True, "silu", "onecycle", "kaiming", True)
    assert h.label_smoothing == 0.1 and 1 <= h.clip_grad_norm <= 2


def test_the_ablation_spaces_recipes_hold_training_knobs_only():
    architecture = set(vocab.MODEL_FIELDS) - {"init"} | {"pretrained", "freeze", "fresh_stem", BY_MODEL}
    for name in SPACES["ablation"]["params"]["recipe"]["grid"]:
        assert not set(RECIPES[name]) & architecture, name


def test_resnet_depth_is_the_study_as_it_ran_against_ours():
    def trial(recipe, model, **explicit):
        return trial_config({"epochs": 50, "early_stop_patience": 0, "recipe": recipe, "model": model,
                               **explicit})

    for model in ("resnet18", "resnet50"):
        study = trial("resnet_study", model)
        assert (study.stem, study.pretrained, study.freeze) == ("imagenet", False, "none")
    study152 = trial("resnet_study", "resnet152")
    assert (study152.stem, study152.pretrained, study152.freeze) == ("imagenet", True, "backbone")
    assert (study152.optimizer, study152.lr, study152.batch_size, study152.scheduler) == \
        ("adam", 5e-4, 256, "none")
    for model in ("resnet18", "resnet50", "resnet152"):
        ours = trial("holistic", model)
        assert (ours.stem, ours.pretrained, ours.freeze, ours.epochs, ours.early_stop_patience) == \
            ("cifar", False, "none", 50, 0)
        assert ours.resolved_dropout == study152.resolved_dropout == 0.0
    # by_model never overrides a field set explicitly
    assert trial("resnet_study", "resnet152", pretrained=False, freeze="none").pretrained is False


def test_explicit_fields_win_over_bundles_and_the_bundle_value_stays_in_the_config():
    cfg = trial_config({"stage": "holistic", "lr": 0.2, "seed": 3})
    assert cfg.lr == 0.2 and cfg.seed == 3 and cfg.attention == "channel"
    with pytest.raises(ConfigError, match="stage='nope'"):
        trial_config({"stage": "nope"})


@pytest.mark.parametrize("name, samples, trials", [("stages", 1, 5), ("stages", 3, 15),
                                                   ("ablation", 1, 48), ("ablation", 2, 96)])
def test_dry_run_lists_arms_times_seeds(name, samples, trials, capsys, tmp_path):
    assert run.main(["--space", name, "--samples", str(samples), "--dry-run",
                     "--storage-path", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"space {name}: {trials} trials" in out
    epochs = 35 if name == "stages" else 30  # stages fine-tune 5 epochs after the main 30
    data = os.environ["ABLATION_DATA_DIR"]  # empty (conftest): CIFAR-10, the default, is not there yet
    assert f"data: cifar10 at 32x32, downloaded once to {data} (about 170 MB)" in out
    confirm = 9 * 12 if name == "ablation" else 0  # at most 9 arms x 12 seeds, the cap (stages: no confirm phase)
    # the ablation screens by successive halving: 48 arms for 10 of the 30 epochs, the best 16 for all 30
    screen = (48 * 10 + 16 * 30) * samples if name == "ablation" else trials * epochs
    assert f"cost: at most {screen + confirm * epochs} trial-epochs" in out
    assert f"each row runs with {samples} seed(s)" in out  # the arms once, not once per seed
    # the estimate from a probe on this machine, and (days of CPU time here) cheaper commands with theirs
    assert re.search(r"^estimated wall time: ~.+ with \d+ trial\(s\) at once, from a probe of [12] arm\(s\) on this "
                     r"machine's cpu \(1 thread; no GPU\)(; up to ~.+ if every possible confirm arm is taken and "
                     r"runs to the cap)?"
                     r"(; the machine is busy: .+)?$", out, re.M)
    assert re.search(r"^  cheaper: python sweep/run.py --space \S+ --smoke-test   \(synthetic data, a few tiny trials: "
                     r"~\d+ (s|min)( \d+ s)?\)$", out, re.M)
    # the table: after the seeds line, its columns, one row per arm
    lines = out.splitlines()
    table = lines[next(i for i, line in enumerate(lines) if line.startswith("each row runs")) + 2:]
    assert len(table) == trials // samples and table[-1].split()[0] == str(trials // samples - 1)
    assert not any(tmp_path.iterdir())


def test_dry_run_says_where_the_data_comes_from(capsys, tmp_path):
    assert run.main(["--space", "smoke", "--dry-run", "--dataset", "fashion-mnist", "--set",
                     f"data_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "data: fashion-mnist at 32x32, " in out
    assert (f"read once from {FASHION_MNIST}" in out if FASHION_MNIST
            else f"downloaded once to {tmp_path} (about 31 MB)" in out)


def test_yaml_space_uses_the_whole_vocabulary(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "description: every kind\nsearch: random\nscheduler: fifo\nsamples: 3\n"
        "params:\n  dataset: synthetic\n  recipe: holistic\n  attention: {grid: [none, channel]}\n"
        "  augment: {choice: [basic, paper]}\n  dropout: {uniform: [0.0, 0.5]}\n"
        "  lr: {loguniform: [1.0e-3, 0.3]}\n  finetune_epochs: {randint: [0, 3]}\n  dsconv: 'true'\n")
    name, space = vocab.load_space(str(path))
    assert name == "mine" and space["params"]["dsconv"] is True
    ray_space = vocab.to_param_space(space["params"])
    assert ray_space["attention"] == {"grid_search": ["none", "channel"]}
    assert isinstance(ray_space["lr"], tune.search.sample.Float)
    assert isinstance(ray_space["finetune_epochs"], tune.search.sample.Integer)
    assert vocab.count_trials(space["params"], 3) == 6
    assert max_epochs(space["params"], False) == 30 + 2


BAD_SPACES = {
    "params:\n  nonsense: 1\n": "neither a TrainConfig field nor a bundle",
    "params:\n  lr: {gaussian: [0, 1]}\n": "expected a value or one of",
    "params:\n  attention: {uniform: [0, 1]}\n": "uniform needs a float field",
    "params:\n  lr: {loguniform: [0, 1]}\n": "low > 0",
    "params:\n  epochs: {randint: [1.5, 4]}\n": "randint needs integer bounds",
    "params:\n  attention: {grid: []}\n": "non-empty list",
    "params:\n  batch_size: {choice: [64, big]}\n": "batch_size='big' has the wrong type",
    "params:\n  attention: {grid: [none, sparkly]}\n": "attention='sparkly' is not one of",
    "params:\n  dropout: {uniform: [0.0, 1.5]}\n": "dropout=",
    "params:\n  recipe: fancy\n": "recipe='fancy' is not one of",
    "serach: grid\nparams:\n  lr: 0.1\n": "unknown top-level key(s) serach",
    "search: bayes\nparams:\n  lr: 0.1\n": "search='bayes' is not one of",
    "params: [lr, 0.1]\n": "needs a non-empty mapping",
    "params:\n  lr: [0.1\n": "is not valid YAML",
    "search: grid\nparams:\n  lr: {choice: [0.1, 0.2]}\n": "grid search takes only grid axes",
    "search: optuna\nparams:\n  lr: {grid: [0.1, 0.2]}\n": "Optuna samples",
}


@pytest.mark.parametrize("text, message", list(BAD_SPACES.items()))
def test_malformed_spaces_are_one_line_errors_and_write_nothing(text, message, tmp_path, capsys):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    out = tmp_path / "runs"
    assert run.main(["--space", str(path), "--storage-path", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("run.py: error: ") and err.count("\n") == 1 and message in err, err
    assert not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["--space", "nope"], "unknown space 'nope'"),
    (["--space", "stages", "--set", "lr"], "--set takes KEY=VALUE"),
    (["--space", "stages", "--set", "lr=fast"], "lr='fast' has the wrong type"),
    (["--space", "stages", "--set", "colour=red"], "neither a TrainConfig field"),
    (["--space", "stages", "--scheduler", "pbt"], "invalid choice: 'pbt'"),
    (["--space", "stages", "--search", "bohb"], "invalid choice: 'bohb'"),
    (["--space", "resnet-depth", "--set", "width=0.5"], "SqueezeNet-only"),
    (["--space", "stages", "--gpus-per-trial", "1.5"], "--gpus-per-trial"),
    (["--space", "stages", "--samples", "0"], "--samples must be >= 1"),
    (["--resume", "REPLACED"], "is not an experiment directory"),
    (["--space", "stages", "--resume", "x"], "not allowed with argument"),
    ([], "one of the arguments --space --resume --confirm --trust is required"),
])
def test_bad_cli_input_is_one_line_exit_2_and_writes_nothing(argv, message, tmp_path, capsys):
    argv = [str(tmp_path) if a == "REPLACED" else a for a in argv]
    out = tmp_path / "runs"
    assert run.main([*argv, "--storage-path", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("run.py: error: ") and err.count("\n") == 1 and message in err, err
    assert not out.exists()


def test_the_cli_runs_as_a_script_from_the_repository_root():
    done = subprocess.run([sys.executable, "sweep/run.py", "--space", "ablation", "--dry-run"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "space ablation: 48 trials" in done.stdout
    bad = subprocess.run([sys.executable, "sweep/run.py", "--space", "ablation", "--set", "lr=x"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_the_rank_metric_breaks_accuracy_ties_by_loss_and_never_reorders_accuracies():
    from sweep.trainable import rank_score

    assert rank_score(10.0, 2.0) > rank_score(10.0, 2.3)  # a tie at chance: the lower loss ranks higher
    assert rank_score(10.01, 10.0) > rank_score(10.0, 0.0)  # 1 image of 10,000 outweighs any loss
    assert rank_score(10.0, float("nan")) == rank_score(10.0, float("inf")) == rank_score(10.0, 50.0)
    assert rank_score(55.5, None) == 55.5 - 1e-3


def test_the_smoke_test_learns_in_each_arm_it_runs():
    """README's smoke test (ablation, --smoke-test: attention none and channel, the other axes at their
    first level) shows learning in its minute: 512 images at batch 64 (7 steps, one epoch) stayed below
    chance; chance here is 10%."""
    import torch

    from training.loop import fit

    params, _, _ = plan(["--space", "ablation", "--smoke-test"])
    threads = torch.get_num_threads()
    try:
        for arm in vocab.expand_grid(params):
            cfg = trial_config(arm, smoke=True).replace(threads=1, device="cpu")  # as a sweep's trial runs
            assert fit(cfg)["best_val_acc"] > 20, arm["recipe"]
    finally:
        torch.set_num_threads(threads)


def test_sweeps_md_lists_every_space_and_preset_exactly():
    """README sends readers to docs/SWEEPS.md for the presets: its tables must hold every preset's knobs
    (stages: what changes from the stage above) and every named space."""
    rows = {}
    for line in (ROOT / "docs" / "SWEEPS.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) >= 2:
            rows.setdefault(cells[0].strip("`"), []).append(cells[1:])

    def shown(value):
        return str(value).lower() if isinstance(value, bool) else str(value)

    previous = None
    for name, preset in STAGES.items():
        changed = preset if previous is None else {k: v for k, v in preset.items() if previous.get(k) != v}
        assert any(all(f"{k}={shown(v)}" in row[0] for k, v in changed.items()) for row in rows[name]), name
        previous = preset
    for name, preset in RECIPES.items():
        knobs = {k: v for k, v in preset.items() if k != BY_MODEL}
        assert any(all(f"{k}={shown(v)}" in row[0] for k, v in knobs.items()) for row in rows[name]), name
    for name, space in SPACES.items():
        fixed = {k: v for k, v in space["params"].items() if not isinstance(v, dict)}
        assert any(all(f"{k}={shown(v)}" in " ".join(row) for k, v in fixed.items()) and space["description"] in row
                   for row in rows[name]), name


def test_run_help_lists_every_space_with_its_factors_and_examples():
    text = " ".join(run.build_parser().format_help().split())
    for name, space in SPACES.items():
        assert f"{name}: " in text
        for axis in (k for k, v in space["params"].items() if isinstance(v, dict)):
            assert f"{axis} " in text[text.index(f"{name}: "):]
    assert "factors: attention none | simple | channel; residual none | simple" in text
    assert "examples: python sweep/run.py --space ablation --dry-run" in text
