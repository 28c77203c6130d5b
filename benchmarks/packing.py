"""Benchmark 3, trial packing: aggregate images/s of 1, 2, 4, 8 concurrent trials sharing one GPU
through Ray Tune's fractional GPUs ({"gpu": 1/n} per trial), against one trial alone.

Each trial is a Ray Tune trial that trains the way fit() does (training.engine.train_epoch over a
DeviceLoader with `basic` augmentation, fit()'s precision and memory-format defaults), warms up, then
trains for --seconds and reports (wall time, images so far) after every pass. The aggregate is the
sum of the trials' rates inside the window in which all n of them were training, so staggered trial
starts and Ray's start-up do not count. Evaluation and checkpoints are left out: this measures how
well trials share the device, not fit()'s per-epoch bookkeeping.

Needs a CUDA GPU and Ray; without a GPU it says so and exits with status 2. `--device cpu` runs the
same machinery on CPU cores (a check that it works, not the GPU measurement).

    python benchmarks/packing.py --out benchmarks/results/gpu-packing.json
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import from the repository root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import torch  # noqa: E402

from benchmarks import common  # noqa: E402


def packed_trial(config: dict) -> None:
    """One Ray Tune trial: train for config["seconds"] after a warm-up, reporting progress per pass."""
    from ray import tune

    from training.datasets import NORMALIZATION
    from training.loader import DeviceLoader
    from training.loop import resolve_device

    torch.set_num_threads(config["threads"])
    device = resolve_device(config["device"])  # Ray sets CUDA_VISIBLE_DEVICES to the trial's GPU
    cuda = device.type == "cuda"
    trainer = common.Trainer(config["model"], device, channels_last=cuda)
    x, y = common.synthetic_images(config["batch_size"] * config["steps"], seed=config["seed"])
    mean, std = NORMALIZATION["cifar10"]
    data = DeviceLoader(x, y, batch_size=config["batch_size"], mean=mean, std=std, device=device,
                        augment="basic", shuffle=True, drop_last=True, channels_last=cuda)
    gen = torch.Generator(device=device).manual_seed(config["seed"])
    for _ in range(2):
        trainer.train(data.batches(gen))
    start, images = time.time(), 0
    while True:
        images += trainer.train(data.batches(gen)).images  # ends with a sync: the pass is done
        now = time.time()
        memory = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else 0.0
        tune.report({"t": now, "t0": start, "images": images, "memory_gb": memory})
        if now - start >= config["seconds"]:
            return


def window_rate(rows: list[dict], lo: float, hi: float) -> float:
    """A trial's images/s inside [lo, hi], from its (time, cumulative images) reports (linear between)."""
    points = [(rows[0]["t0"], 0)] + [(r["t"], r["images"]) for r in rows]

    def images_at(t: float) -> float:
        for (t1, n1), (t2, n2) in zip(points, points[1:]):
            if t1 <= t <= t2:
                return n1 + (n2 - n1) * (t - t1) / max(t2 - t1, 1e-9)
        return points[-1][1] if t > points[-1][0] else 0.0

    return (images_at(hi) - images_at(lo)) / (hi - lo)


def run_packed(n: int, args, device: torch.device, storage: str) -> dict:
    from ray import tune

    cpus = 1 if device.type == "cuda" else (os.cpu_count() or 1) / n
    resources = {"cpu": cpus, "gpu": 1 / n if device.type == "cuda" else 0}
    config = {"model": args.model, "batch_size": args.batch_size, "steps": args.steps, "seconds": args.seconds,
              "device": device.type, "threads": max(1, int(cpus)), "seed": tune.grid_search(list(range(n)))}
    tuner = tune.Tuner(tune.with_resources(packed_trial, resources), param_space=config,
                       tune_config=tune.TuneConfig(max_concurrent_trials=n),
                       run_config=tune.RunConfig(name=f"packing-{n}", storage_path=storage, verbose=0))
    started = time.perf_counter()
    results = tuner.fit()
    wall = time.perf_counter() - started
    if results.num_errors:
        raise RuntimeError(f"{results.num_errors} packed trial(s) failed: {results.errors[0]}")
    curves = [r.metrics_dataframe.to_dict("records") for r in results]
    lo, hi = max(c[0]["t0"] for c in curves), min(c[-1]["t"] for c in curves)
    if hi <= lo:
        raise RuntimeError(f"the {n} trials never trained at the same time: raise --seconds")
    rates = [window_rate(c, lo, hi) for c in curves]
    return {"trials": n, "gpu per trial": resources["gpu"], "cpu per trial": cpus,
            "aggregate img/s": sum(rates), "per-trial img/s": sum(rates) / n, "overlap s": hi - lo,
            "wall s": wall, "max memory GB": max(c[-1]["memory_gb"] for c in curves)}


def main(argv: list[str] | None = None) -> dict:
    p = common.make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--trials", nargs="+", type=int, help="concurrent trials (default 1 2 4 8; CPU: 1 2)")
    p.add_argument("--model", default="squeezenet")
    p.add_argument("--batch-size", type=int, default=256, help="TrainConfig's default")
    p.add_argument("--steps", type=int, help="batches per pass, one report each (default: 50 on CUDA, "
                                             "about 0.3 s at 40,000 images/s; 10 on CPU)")
    p.add_argument("--seconds", type=float, help="timed training per trial (default 30, quick 3)")
    args = p.parse_args(argv)
    if args.device != "cpu" and not torch.cuda.is_available():
        print("packing.py: needs a CUDA GPU, and none is visible (--device cpu checks the machinery on "
              "CPU cores)", file=sys.stderr)
        sys.exit(2)
    device = common.setup(args)
    cuda = device.type == "cuda"
    trials = args.trials or ([1, 2, 4, 8] if cuda else [1, 2])
    args.steps = args.steps or (50 if cuda else 10)
    if args.quick:
        args.batch_size, args.steps = min(args.batch_size, 64 if cuda else 16), min(args.steps, 4)
    args.seconds = args.seconds or (3.0 if args.quick else 30.0)
    import ray

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray.init(address="local", include_dashboard=False, log_to_driver=False)  # never a `ray start` cluster
    try:
        with tempfile.TemporaryDirectory(prefix="packing-") as storage:
            rows = [run_packed(n, args, device, storage) for n in trials]
    finally:
        ray.shutdown()
    alone = rows[0]["aggregate img/s"] if rows[0]["trials"] == 1 else float("nan")
    for row in rows:
        row["x one trial"] = row["aggregate img/s"] / alone
    settings = {"trials": trials, "model": args.model, "batch_size": args.batch_size, "steps": args.steps,
                "seconds": args.seconds, "augment": "basic"}
    return common.finish(args, device, "packing", settings, rows)


if __name__ == "__main__":
    main()
