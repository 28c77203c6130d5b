"""Benchmark 2, training throughput and utilisation: images/s of the real train step (our device
loader with `basic` augmentation feeding training.engine.train_epoch) and the share of the device's
peak FLOP/s that the model's training FLOPs reach, over precision x channels_last x torch.compile x
batch size.

Training FLOPs per image are taken as 3x the forward FLOPs that torch.utils.flop_counter counts (the
backward pass costs about twice the forward: one product for the input gradient, one for the weight
gradient). Peaks: the data-sheet table in benchmarks/common.py for known GPUs; on a CPU (or an
unknown GPU) a large matmul measured here in the same precision.

    python benchmarks/throughput.py --quick
    python benchmarks/throughput.py --compile off on --out benchmarks/results/cpu-throughput.json
"""
from __future__ import annotations

import itertools
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import from the repository root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import torch  # noqa: E402

from benchmarks import common  # noqa: E402
from training.datasets import NORMALIZATION  # noqa: E402
from training.loader import DeviceLoader  # noqa: E402

MEAN, STD = NORMALIZATION["cifar10"]
TRAIN_FLOPS_PER_FORWARD = 3  # forward + backward (about 2x forward)
ON_OFF = {"off": False, "on": True}


def loader(batch: int, steps: int, device: torch.device, channels_last: bool) -> DeviceLoader:
    x, y = common.synthetic_images(batch * steps)
    return DeviceLoader(x, y, batch_size=batch, mean=MEAN, std=STD, device=device, augment="basic",
                        shuffle=True, drop_last=True, channels_last=channels_last)


def measure(model: str, batch: int, precision: str, channels_last: bool, compile: bool, args,
            device: torch.device, peaks: dict) -> dict:
    """Warm up (compiling, if asked), size a pass to about --seconds, then the fastest of --rounds
    passes (timeit's rule: on a shared machine the slower passes measure the neighbours)."""
    started = time.perf_counter()
    trainer = common.Trainer(model, device, precision=precision, channels_last=channels_last, compile=compile)
    gen = torch.Generator(device=device).manual_seed(0)
    warm = loader(batch, 1, device, channels_last)
    rate = max(trainer.train(warm.batches(gen)).images_per_sec for _ in range(args.warmup))
    warmup_s = time.perf_counter() - started
    steps = max(2, math.ceil(args.seconds * rate / batch))
    timed = loader(batch, steps, device, channels_last)
    rate = max(trainer.train(timed.batches(gen)).images_per_sec for _ in range(args.rounds))
    peak, _ = peaks[trainer.precision]
    achieved = rate * TRAIN_FLOPS_PER_FORWARD * trainer.flops
    return {"model": model, "batch": batch, "precision": trainer.precision, "channels_last": channels_last,
            "compile": compile, "img/s": rate, "step ms": 1000 * batch / rate,
            "GFLOP/s": achieved / 1e9, "% of peak": 100 * achieved / peak, "warm-up s": warmup_s,
            "fwd GFLOP/img": trainer.flops / 1e9}


def main(argv: list[str] | None = None) -> dict:
    p = common.make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["squeezenet", "resnet18"])
    p.add_argument("--batch-sizes", nargs="+", type=int,
                   help="default: 256 512 1024 on CUDA, 64 256 on CPU, 16 with --quick")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16"))
    p.add_argument("--channels-last", nargs="+", default=["off", "on"], choices=tuple(ON_OFF))
    p.add_argument("--compile", nargs="+", default=None, choices=tuple(ON_OFF),
                   help="torch.compile settings to try (default: off on for CUDA, off on CPU: compiling "
                        "takes minutes there)")
    p.add_argument("--seconds", type=float, help="length of one timed pass (default 2, quick 0.2)")
    p.add_argument("--rounds", type=int, help="timed passes; the fastest is reported (default 3, quick 1)")
    p.add_argument("--warmup", type=int, default=3, help="untimed one-batch passes first (compiling happens here)")
    args = p.parse_args(argv)
    device = common.setup(args)
    cuda = device.type == "cuda"
    batches = args.batch_sizes or ([16] if args.quick else [256, 512, 1024] if cuda else [64, 256])
    compiles = args.compile or (["off", "on"] if cuda and not args.quick else ["off"])
    args.seconds = args.seconds or (0.2 if args.quick else 2.0)
    args.rounds = args.rounds or (1 if args.quick else 3)
    peaks = {prec: common.peak_flops(device, prec) for prec in args.precisions}
    rows = []
    for model, batch, prec, cl, comp in itertools.product(args.models, batches, args.precisions,
                                                          args.channels_last, compiles):
        rows.append(measure(model, batch, prec, ON_OFF[cl], ON_OFF[comp], args, device, peaks))
        print(common.markdown_table(rows[-1:]).splitlines()[-1], flush=True)
    settings = {"models": args.models, "batch_sizes": batches, "precisions": args.precisions,
                "channels_last": args.channels_last, "compile": compiles, "augment": "basic",
                "seconds_per_pass": args.seconds, "rounds": args.rounds,
                "train_flops": "3 x forward FLOPs (torch.utils.flop_counter)"}
    peak_info = {prec: {"flops": value, "source": source} for prec, (value, source) in peaks.items()}
    return common.finish(args, device, "throughput", settings, rows, {"peak": peak_info})


if __name__ == "__main__":
    main()
