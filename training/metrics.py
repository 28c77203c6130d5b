"""Cost metrics measured once per trial: parameters, FLOPs, size and inference latency."""
from __future__ import annotations

import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_size_mb(model: nn.Module) -> float:
    """Bytes of parameters and buffers (what a saved state dict holds), in MB (10**6 bytes)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors) / 1e6


def count_flops(model: nn.Module, image_shape: tuple[int, int, int], device: torch.device) -> int:
    """Forward FLOPs for one image, counted by torch.utils.flop_counter (a multiply-add is 2 FLOPs).

    Runs in eval mode so it draws no random numbers (dropout) and leaves BN statistics alone.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *image_shape, device=device))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously), so a timer reads its end."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def measure_latency_ms(model: nn.Module, image_shape: tuple[int, int, int], batch_size: int,
                       device: torch.device, repeats: int, autocast: torch.autocast) -> float:
    """Median wall time of one inference forward pass at `batch_size`, in milliseconds."""
    was_training = model.training
    model.eval()
    x = torch.randn(batch_size, *image_shape, device=device)
    times = []
    try:
        with autocast:
            model(x)  # warm-up: allocator, cudnn algorithm choice
            for _ in range(repeats):
                sync(device)
                start = time.perf_counter()
                model(x)
                sync(device)
                times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return 1000.0 * sorted(times)[len(times) // 2]


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform module knows."""
    import platform
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
