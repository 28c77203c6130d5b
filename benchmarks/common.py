"""What every benchmark shares: its flags, the machine it ran on, timing, peak FLOP/s, the table it
prints and the JSON it writes.

Every script takes ``--quick`` (tiny sizes: a smoke run of seconds), ``--device``, ``--threads`` and
``--out FILE.json``, and ``--max-load L`` to wait (up to ``--wait-s``) for the machine's 1-minute
load average to fall below L before measuring: on a shared machine, other jobs skew timings. The
JSON records the load before and after, so a reader can tell a quiet run from a noisy one.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from training.metrics import cpu_model, sync

REPO = Path(__file__).resolve().parent.parent

# Dense peak FLOP/s of NVIDIA GPUs from the vendors' data sheets (no sparsity), by the precision the
# math runs in. fp32 training of a CNN runs its convolutions in TF32 while cuDNN's allow_tf32 is on
# (torch's default), so fp32 is compared with the TF32 peak then. Longest name first: "H100 NVL"
# must win over "H100".
GPU_PEAK_FLOPS: dict[str, dict[str, float]] = {
    "H100 NVL": {"bf16": 835e12, "tf32": 418e12, "fp32": 60e12},
    "H100 PCIe": {"bf16": 756e12, "tf32": 378e12, "fp32": 51e12},
    "H100": {"bf16": 989e12, "tf32": 495e12, "fp32": 67e12},  # SXM (HBM3)
    "H200": {"bf16": 989e12, "tf32": 495e12, "fp32": 67e12},
    "A100": {"bf16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
    "L40S": {"bf16": 362e12, "tf32": 183e12, "fp32": 91.6e12},
    "A10": {"bf16": 125e12, "tf32": 62.5e12, "fp32": 31.2e12},
    "L4": {"bf16": 121e12, "tf32": 60e12, "fp32": 30.3e12},
}


def make_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of a few seconds")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: one per core)")
    p.add_argument("--out", help="write the results here as JSON")
    p.add_argument("--max-load", type=float, default=0.0,
                   help="first wait until the 1-minute load average is below this (0: do not wait)")
    p.add_argument("--wait-s", type=float, default=600, help="longest wait for --max-load")
    return p


def setup(args: argparse.Namespace) -> torch.device:
    """Threads, device, then the wait for a quiet machine. Returns the device to measure on."""
    from training.loop import resolve_device

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    device = resolve_device(args.device)
    if args.max_load > 0:
        wait_for_quiet(args.max_load, args.wait_s)
    args.load_before = load_average()
    return device


def load_average() -> float:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else float("nan")


def wait_for_quiet(max_load: float, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while load_average() >= max_load and time.monotonic() < deadline:
        print(f"# load {load_average():.2f} >= {max_load}: waiting", file=sys.stderr, flush=True)
        time.sleep(20)


def machine(device: torch.device) -> dict[str, Any]:
    """The facts a reader needs to compare a result with another: CPU, cores, torch, the device."""
    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "device": device.type}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    return info


def seconds(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall time of fn(), with the device's queue drained before and after."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def peak_flops(device: torch.device, precision: str) -> tuple[float, str]:
    """(peak FLOP/s, where it comes from) for `precision` ("fp32" | "bf16") on `device`: the data-sheet
    table for known GPUs, else a large matmul measured here (the practical peak of this machine)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        basis = "tf32" if precision == "fp32" and torch.backends.cudnn.allow_tf32 else precision
        for key, peaks in GPU_PEAK_FLOPS.items():
            if key in name:
                return peaks[basis], f"{key} data sheet, dense {basis}"
    return measured_matmul_flops(device, precision), f"measured {precision} matmul"


def measured_matmul_flops(device: torch.device, precision: str, n: int = 2048, reps: int = 5) -> float:
    """Best FLOP/s of an n x n matmul (2 n^3 FLOPs) in `precision` over `reps` runs."""
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up
    best = min(seconds(lambda: a @ b, device) for _ in range(reps))
    return 2 * n**3 / best


def markdown_table(rows: list[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows as a Markdown table (what docs/PERFORMANCE.md holds), floats to 3 significant digits."""
    columns = list(columns or dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if value != value else f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def finish(args: argparse.Namespace, device: torch.device, name: str, settings: dict[str, Any],
           rows: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Print the table and write the JSON (machine, settings, load before/after, rows)."""
    result = {"benchmark": name, "quick": bool(args.quick), "machine": machine(device),
              "load_1min": {"before": getattr(args, "load_before", None), "after": load_average()},
              "settings": settings, "rows": [_rounded(r) for r in rows], **(extra or {})}
    print(markdown_table(result["rows"]))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1, default=str) + "\n")
        print(f"# wrote {args.out}")
    return result


def _rounded(row: dict[str, Any]) -> dict[str, Any]:
    """Keep the JSON small: 4 significant digits are more than the timing noise allows."""
    return {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in row.items()}


# ------------------------------------------------------------------------------------- training
class Trainer:
    """One model with its optimiser, built the way fit() builds it, and a call that trains it over
    an iterable of device batches with the engine's own hot loop (training.engine.train_epoch)."""

    def __init__(self, model: str, device: torch.device, *, width: float = 1.0, precision: str = "auto",
                 channels_last: bool = False, compile: bool = False, image_shape=(3, 32, 32)) -> None:
        from models import create_model
        from study.config import TrainConfig
        from training.loop import resolve_precision
        from training.metrics import count_flops
        from training.optim import build_optimizer

        cfg = TrainConfig(model=model, width=width, device=device.type, precision=precision,
                          channels_last=channels_last, compile=compile, lr=0.01)
        torch.manual_seed(0)
        self.model = create_model(cfg, 10).to(device)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # as fit() does
        self.autocast, self.scaler, self.precision = resolve_precision(precision, device)
        self.flops = count_flops(self.model, tuple(image_shape), device)  # forward, per image
        self.forward = torch.compile(self.model) if compile else self.model
        self.optimizer = build_optimizer(cfg, self.model, device)
        self.criterion = torch.nn.CrossEntropyLoss()

    def train(self, batches):
        """EpochResult of one pass over `batches` (it reads the loss once, at the end: a sync)."""
        from training.engine import train_epoch

        return train_epoch(self.forward, batches, self.optimizer, None, self.criterion, self.scaler,
                           self.autocast, 0.0)


def synthetic_images(n: int, seed: int = 0, shape=(3, 32, 32)) -> tuple[torch.Tensor, torch.Tensor]:
    """n random uint8 images and labels: throughput does not depend on what the pixels show."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=g),
            torch.randint(0, 10, (n,), generator=g))

