"""Train one model, no Ray:  python train.py --dataset fashion-mnist --model squeezenet --epochs 30

Every TrainConfig field is a flag (`--label-smoothing 0.1`, `--dsconv true`); `--recipe NAME` and
`--stage NAME` apply a sweep's preset (the knobs a space's `recipe` or `stage` value sets); `--config
FILE` loads the same keys from YAML or JSON; a preset beats the file and flags beat both; `--config TRIAL_DIR` re-runs a sweep's trial
(its trial_config.json: the same seed, threads, device and precision, so the same metrics on CPU).
The run directory receives TensorBoard scalars, the latest checkpoint, one JSON line per epoch, the
resolved config with provenance and a final summary.json. `--resume RUN_DIR` continues an interrupted
run from its checkpoint (also after Ctrl-C, SIGTERM or a full disk); an existing run directory is
never replaced without `--overwrite`.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

# torch and what imports it load inside run(): --help and a refused flag answer in a fraction of a second
from study import layout  # the run's files, named where a sweep trial's are
from study.cli import Parser, parse_sets, run_cli
from study.config import MODEL_NAMES, TrainConfig, UserError, field_names, is_user_model, load_mapping
from study.trial import BUNDLES, BY_MODEL, merge_config
from sweep.planning.configs import validated
from training.signals import sigterm_as_ctrl_c

__all__ = ["TrainConfig", "main"]  # fit: training.loop.fit


def field_help() -> dict[str, str]:
    """Each field's trailing comment in study/config.py, the one place the knobs are documented."""
    source = Path(__file__).with_name("study").joinpath("config.py").read_text()
    pattern = re.compile(r"^    (\w+): \w+ = .*?  # (.*)$", re.MULTILINE)
    return {name: text for name, text in pattern.findall(source)}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="train.py",
        description="Train one CNN (SqueezeNet / ResNet) on CIFAR-10/100, Fashion-MNIST, synthetic or "
                    "your own image folder, and print a JSON summary.")
    parser.add_argument("--config", metavar="FILE|DIR",
                        help="YAML or JSON file of knobs, or a sweep trial's directory (its trial_config.json) "
                             "or a train.py run directory to re-run; flags override it")
    parser.add_argument("--out-dir", metavar="DIR",
                        help="run directory (default: runs/train/<time>-<model>-<dataset>)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its checkpoint")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run in --out-dir (its checkpoint, config, metrics, summary and "
                             "TensorBoard files) instead of refusing")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines (the summary still prints)")
    parser.add_argument("--set", dest="sets", metavar="KEY=VALUE", nargs="+", action="extend", default=[],
                        help="set any knob, or a toggle of your own model (--model FILE.py:FACTORY --set depth=3)")
    presets = parser.add_argument_group("presets (study/trial.py: what a space's recipe or stage value sets)")
    for key, named in BUNDLES.items():
        presets.add_argument(f"--{key}", choices=list(named), metavar="NAME",
                             help=f"apply the {key} preset NAME ({' | '.join(named)}): "
                                  + ("how the network is trained" if key == "recipe" else
                                     "one of the SqueezeNet study's five cumulative stages")
                                  + "; the flags given beside it win")
    knobs = parser.add_argument_group("training knobs (TrainConfig)")
    helps, defaults = field_help(), TrainConfig().to_dict()
    helps["model"] = helps["model"].replace("MODEL_NAMES", " | ".join(MODEL_NAMES))  # their one list
    helps["model"] += " (docs/SWEEPS.md, 'Your own model'; its toggles: --set NAME=VALUE)"
    for name in field_names():
        flag = "--" + name.replace("_", "-")
        knobs.add_argument(flag, dest=name, default=None, metavar=type(defaults[name]).__name__.upper(),
                           help=f"{helps.get(name, '')} (default: {defaults[name]!r})".replace("%", "%%"))
    return parser


RUN_FILES = (layout.RUN_CONFIG_FILE, "summary.json", "metrics.jsonl", "checkpoint")  # + TensorBoard's events.out.*


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """The run's config: --config and flags, or with --resume the run's own, which flags may repeat
    but not change (its checkpoint continues only the config it was written with)."""
    if args.resume:
        path = Path(args.resume) / layout.RUN_CONFIG_FILE
        if not path.is_file():
            raise UserError(f"{args.resume} is not a train.py run directory (no {layout.RUN_CONFIG_FILE} with a config)")
        saved = layout.read_config_record(path)
        cfg = validated(saved)
        asked = validated(with_flags(saved, args))
        changed = [f"--{k.replace('_', '-')}" for k, v in asked.to_dict().items() if cfg.to_dict().get(k) != v]
        if changed:
            raise UserError(f"--resume continues {args.resume} as it was configured, but {', '.join(changed)} "
                            "would change it; start a fresh --out-dir instead (with --init-from to start "
                            "from its weights)")
        return cfg
    return validated(with_flags(load_config(args.config) if args.config else {}, args))



def with_flags(base: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """`base` (a --config file's keys, or a run's own config) with the presets named by --recipe and
    --stage on top, then the knob flags on top of those, as a sweep resolves a trial
    (study.trial.merge_config: a preset's per-model entries apply to fields no flag set). A file may
    name a preset too (`recipe: holistic`); its own fields beat the preset it names."""
    flags = {**parse_sets(args.sets), **{k: v for k, v in vars(args).items() if k in field_names() and v is not None}}
    named = {key: getattr(args, key) for key in BUNDLES if getattr(args, key, None)}
    covered = {k for key, name in named.items() for k in BUNDLES[key][name] if k != BY_MODEL}
    return merge_config({**{k: v for k, v in base.items() if k not in covered}, **named, **flags})


def check_out_dir(run_dir: Path, overwrite: bool) -> None:
    """A new run's directory: absent, empty, or (with --overwrite) a run to replace; inside a
    writable directory."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out-dir {run_dir} is a file, not a directory")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not overwrite:
        raise UserError(f"{run_dir} already holds files: continue its run with --resume {run_dir}, choose a "
                        "fresh --out-dir, or pass --overwrite to replace it")
    parent = run_dir
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"--out-dir {run_dir} is inside {parent}, which is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"--out-dir {run_dir}: {parent} is not writable")


def remove_run(run_dir: Path) -> None:
    """--overwrite: only the files train.py writes go; anything else in the directory stays."""
    for path in [*(run_dir / name for name in RUN_FILES), *run_dir.glob("events.out.tfevents.*")]:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def check_resumable(run_dir: Path, cfg: TrainConfig) -> dict[str, Any]:
    """The checkpoint a resumed run continues from, loaded and checked against its config."""
    from study.files import refuse_link
    from training.checkpoint import check_same_config, load_checkpoint

    if not (run_dir / "checkpoint").is_dir():
        raise UserError(f"{run_dir} has no checkpoint/ to resume from")
    refuse_link(run_dir / "metrics.jsonl")  # the one file a resumed run appends to; the rest it replaces
    saved = load_checkpoint(run_dir / "checkpoint")
    check_same_config(saved, cfg.to_dict())
    return saved


def load_config(path: str) -> dict[str, Any]:
    """The knobs of a YAML/JSON file, or of a recorded run: a sweep's trial directory (or its
    trial_config.json) or a train.py run directory (or its config.json), whose record holds the
    resolved config (threads, device and precision as the run used them) under "config"."""
    given = Path(path)
    if given.is_dir():
        found = [given / name for name in layout.CONFIG_RECORDS if (given / name).is_file()]
        if not found:
            raise UserError(f"{given} holds no {' or '.join(layout.CONFIG_RECORDS)}: not a sweep trial or "
                            "train.py run")
        given = found[0]
    return layout.read_config_record(given) if given.name in layout.CONFIG_RECORDS else load_mapping(given)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every check first (config, device, output path, dataset sizes, --init-from, the checkpoint to
    resume), then the dataset, then the first write."""
    from study.files import WriteError, write_failure, write_text_atomically
    from training.checkpoint import provenance
    from training.datasets import dataset_sizes, prepare_dataset
    from training.loop import fit, resolve_device, resolve_precision
    from training.preflight import check_init_from, check_trial
    from training.reporter import UNITS, ConsoleAndTensorBoard

    cfg = resolve_config(args)
    resolve_precision(cfg.precision, resolve_device(cfg.device))
    run_dir = args.run_dir = Path(args.resume or args.out_dir or default_run_dir(cfg)).resolve()
    if args.resume:
        saved = check_resumable(run_dir, cfg)
    else:
        check_out_dir(run_dir, args.overwrite)
    sizes = dataset_sizes(cfg.dataset)
    check_trial(cfg, sizes)
    check_init_from(cfg, sizes.classes)
    if is_user_model(cfg.model):
        from models.user import notes

        for note in notes(cfg.model):  # its arguments that are not toggles
            print(f"train.py: note: {note}", file=sys.stderr, flush=True)
    if not args.quiet:  # at once: loading the data and building the model take seconds
        print(f"{'resuming' if args.resume else 'run'} {run_dir}: loading {cfg.dataset}, building {cfg.model}",
              flush=True)
    prepare_dataset(cfg.dataset, cfg.resolved_data_dir, cfg.image_size)
    try:
        if args.resume:
            restore_lost_metrics(run_dir, saved)
        else:
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise WriteError(f"cannot create {run_dir}: {write_failure(exc, run_dir.parent)}") from None
            remove_run(run_dir)
            write_text_atomically(run_dir / layout.RUN_CONFIG_FILE,
                                  json.dumps({"config": cfg.to_dict(), **provenance()}, indent=2))
        reporter = ConsoleAndTensorBoard(run_dir, args.quiet, cfg)
        try:
            summary = fit(cfg, reporter, resume_from=str(run_dir / "checkpoint") if args.resume else None,
                          checkpoint_dir=str(run_dir / "checkpoint"), progress=reporter)
        finally:
            reporter.close()
        summary = {**summary, "units": UNITS, "run_dir": str(run_dir)}
        write_text_atomically(run_dir / "summary.json", json.dumps(summary, indent=2))
    except WriteError as exc:
        if not (run_dir / layout.RUN_CONFIG_FILE).is_file():
            raise
        raise WriteError(f"{exc}; once it is fixed, {after_stop(run_dir)}") from None
    return summary


def restore_lost_metrics(run_dir: Path, saved: dict[str, Any]) -> None:
    """The checkpoint's epoch, when its metrics line never reached metrics.jsonl (a full disk)."""
    from study.files import open_for_writing

    metrics = saved.get("metrics")
    if not isinstance(metrics, dict):
        return
    path = run_dir / "metrics.jsonl"
    epochs = set()
    for line in path.read_text(errors="replace").splitlines() if path.is_file() else []:
        with contextlib.suppress(ValueError, AttributeError):
            epochs.add(layout.loads(line).get("epoch"))
    if metrics.get("epoch") not in epochs:
        with open_for_writing(path) as out:
            out.write(json.dumps(metrics) + "\n")


def after_stop(run_dir: Path) -> str:
    """What to do after a run stopped early: resume from its checkpoint, or, before its first epoch
    ended (no checkpoint yet), start it again."""
    if (run_dir / "checkpoint").is_dir():
        return f"every finished epoch is kept; continue with: python train.py --resume {run_dir}"
    return f"no epoch had finished; start again (--out-dir {run_dir} --overwrite, or a fresh --out-dir)"


def default_run_dir(cfg: TrainConfig) -> Path:
    name = cfg.dataset.split(":")[0]
    model = cfg.model.rpartition(":")[2] if is_user_model(cfg.model) else cfg.model  # a user's: its factory's name
    return Path("runs") / "train" / f"{time.strftime('%Y%m%d-%H%M%S')}-{model}-{name}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with sigterm_as_ctrl_c() as terminated:
        try:
            summary = run(args)
        except UserError as exc:
            print(f"train.py: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            run_dir = getattr(args, "run_dir", None)
            after = (after_stop(run_dir) if run_dir and (run_dir / layout.RUN_CONFIG_FILE).is_file()
                     else "nothing was written")
            print(f"train.py: {'terminated' if terminated else 'interrupted'}; {after}", file=sys.stderr)
            return 143 if terminated else 130
    from training.reporter import rounded

    print(json.dumps(rounded(summary), indent=2))
    return 0


if __name__ == "__main__":
    run_cli(main)
