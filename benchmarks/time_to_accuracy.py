"""Benchmark 5, time to accuracy: training seconds until the holistic SqueezeNet and ResNet-18 first
reach fixed test accuracies, per recipe, and which recipe gets there fastest.

Each run is one fit() with the model's preset (SqueezeNet: the study's `holistic` stage; ResNet-18:
TrainConfig's ResNet with the recipe) and a sweep recipe on top (sweep/spaces.py). After every epoch
the epoch's checkpoint is evaluated on the test set (the first --test-images of it, on a CPU where the
full set costs minutes) *outside* the clock, DAWNBench's rule: "seconds" is fit()'s own training
clock (data on the device, training, validation, checkpoints) minus the time of these test passes,
and excludes the one-off start-up (dataset load, model build), reported separately as "setup s".

    python benchmarks/time_to_accuracy.py --quick
    python benchmarks/time_to_accuracy.py --out benchmarks/results/cpu-time-to-accuracy.json
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import from the repository root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import torch  # noqa: E402

from benchmarks import common  # noqa: E402

# Sizes per device kind. CPU: a subset that a 2-core machine trains in minutes, so its thresholds are
# lower than a full run reaches (Fashion-MNIST's ~93-94% needs the whole set and tens of epochs).
DEFAULTS = {
    "quick": {"dataset": "synthetic", "models": ["squeezenet"], "recipes": ["holistic"], "subset": 128,
              "epochs": 2, "batch_size": 32, "test_images": 256, "thresholds": [5.0, 99.0],
              "sets": ["width=0.25", "finetune_epochs=0"]},
    "cpu": {"dataset": "fashion-mnist", "models": ["squeezenet", "resnet18"], "recipes": ["holistic", "baseline"],
            "subset": 2048, "epochs": 4, "batch_size": 64, "test_images": 2000,
            "thresholds": [70.0, 75.0, 80.0], "sets": ["finetune_epochs=0"]},
    "cuda": {"dataset": "fashion-mnist", "models": ["squeezenet", "resnet18"], "recipes": ["holistic", "baseline"],
             "subset": 0, "epochs": 15, "batch_size": 256, "test_images": 0,
             "thresholds": [90.0, 92.0, 93.0], "sets": []},
}


def trial_config(model: str, recipe: str, args, device: torch.device):
    from sweep.planning.configs import trial_config

    preset = {"stage": "holistic"} if model.startswith("squeezenet") else {"model": model}
    sets = dict(item.split("=", 1) for item in args.sets)
    return trial_config({**preset, "recipe": recipe, "model": model, "dataset": args.dataset,
                           "data_dir": args.data_dir, "subset": args.subset, "epochs": args.epochs,
                           "batch_size": args.batch_size, "device": device.type, "measure_latency": False,
                           "seed": args.seed, **sets})


def run_one(model: str, recipe: str, args, device: torch.device) -> tuple[dict, list[dict]]:
    from models import create_model
    from training import checkpoint as ckpt
    from training.datasets import load_dataset
    from training.engine import evaluate
    from training.loader import DeviceLoader
    from training.loop import fit, resolve_precision

    cfg = trial_config(model, recipe, args, device)
    data = load_dataset(cfg.dataset, cfg.resolved_data_dir, cfg.image_size)
    n = args.test_images or len(data.test_y)
    test = DeviceLoader(data.test_x[:n], data.test_y[:n], batch_size=cfg.eval_batch_size, mean=data.mean,
                        std=data.std, device=device)
    probe = create_model(cfg, data.num_classes).to(device)
    autocast, _, _ = resolve_precision(cfg.precision, device)
    curve: list[dict] = []
    probe_s = 0.0

    def report(metrics: dict, checkpoint_dir: str | None) -> None:
        nonlocal probe_s
        started = time.perf_counter()
        probe.load_state_dict(ckpt.model_weights(ckpt.load_checkpoint(checkpoint_dir, map_location=device)))
        acc = evaluate(probe, test.batches(), data.num_classes, autocast).acc
        curve.append({"epoch": metrics["epoch"], "seconds": metrics["elapsed_s"] - probe_s, "test_acc": acc,
                      "val_acc": metrics["val_acc"], "img/s": metrics["images_per_sec"]})
        probe_s += time.perf_counter() - started

    started = time.perf_counter()
    summary = fit(cfg, report)
    total = time.perf_counter() - started
    row = {"model": model, "recipe": recipe, "epochs": len(curve), "train images": summary["train_images"],
           "img/s": common.median([c["img/s"] for c in curve])}
    for threshold in args.thresholds:
        hit = next((c for c in curve if c["test_acc"] >= threshold), None)
        row[f"s to {threshold:g}%"] = hit["seconds"] if hit else "not reached"
    row.update({"final probe test %": curve[-1]["test_acc"], "fit test % (best val, full set)": summary["test_acc"],
                "train s": curve[-1]["seconds"], "setup s": total - probe_s - curve[-1]["seconds"]})
    return row, curve


def fastest(rows: list[dict], thresholds: list[float]) -> dict[str, dict[str, str]]:
    """Per model and threshold: the recipe that reached it first, or "none"."""
    out: dict[str, dict[str, str]] = {}
    for model in dict.fromkeys(r["model"] for r in rows):
        for threshold in thresholds:
            key = f"s to {threshold:g}%"
            timed = [r for r in rows if r["model"] == model and not isinstance(r[key], str)]
            best = min(timed, key=lambda r: r[key]) if timed else None
            out.setdefault(model, {})[f"{threshold:g}%"] = f"{best['recipe']} ({best[key]:.1f} s)" if best else "none"
    return out


def main(argv: list[str] | None = None) -> dict:
    p = common.make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--dataset", help="fashion-mnist | cifar10 | ... (default: fashion-mnist; quick: synthetic)")
    p.add_argument("--data-dir", default="", help="dataset cache (default: $ABLATION_DATA_DIR or ~/.cache/...)")
    p.add_argument("--models", nargs="+")
    p.add_argument("--recipes", nargs="+", help="recipes of sweep/spaces.py: holistic, baseline, resnet_study")
    p.add_argument("--subset", type=int, help="training images (0: all)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--test-images", type=int, help="test images evaluated each epoch (0: all)")
    p.add_argument("--thresholds", nargs="+", type=float, help="test accuracies in percent")
    p.add_argument("--set", dest="sets", nargs="+", metavar="KEY=VALUE", help="more TrainConfig fields")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    device = common.setup(args)
    defaults = DEFAULTS["quick" if args.quick else "cuda" if device.type == "cuda" else "cpu"]
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    results = [run_one(m, r, args, device) for m in args.models for r in args.recipes]
    rows = [row for row, _ in results]
    curves = {f"{row['model']} {row['recipe']}": [{k: round(v, 2) if isinstance(v, float) else v
                                                  for k, v in c.items()} for c in curve]
              for row, curve in results}
    settings = {k: getattr(args, k) for k in ("dataset", "models", "recipes", "subset", "epochs", "batch_size",
                                              "test_images", "thresholds", "sets", "seed")}
    best = fastest(rows, args.thresholds)
    for model, by_threshold in best.items():
        print(f"# fastest for {model}: " + ", ".join(f"{t}: {r}" for t, r in by_threshold.items()))
    return common.finish(args, device, "time_to_accuracy", settings, rows, {"fastest": best, "curves": curves})


if __name__ == "__main__":
    main()
