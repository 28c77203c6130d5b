"""How much of a GPU a trial takes when the user does not say (--gpus-per-trial): a share chosen from
the training footprint of the sweep's largest arm.

A small network does not fill a modern GPU: measured on an H100 (docs/PERFORMANCE.md, "Trial
packing"), four SqueezeNet trials sharing one GPU trained 4.2x the images/s of one trial alone. So a
trial gets a quarter of a GPU when its footprint is small, half when it is middling, a whole one
otherwise. The footprint is estimated on PyTorch's meta device (no memory, no weights), in fp32:

    4 bytes x (4 x parameters + 2 x activations of one image x batch size)

the parameters four times (weights, gradients, two optimiser buffers at most: Adam's), the output of
every leaf module twice (kept for the backward pass, and its gradient). It is a rough upper bound
(mixed precision halves the activations; a SqueezeNet trial in bf16 used 0.39 GB on the H100) and it ignores the CUDA context each trial adds (about
0.5 GiB). The shares keep trials within a 16 GiB GPU, the smallest common data-centre GPU: four at
up to 2 GiB each, two at up to 5 GiB each. At the default batch of 256 on 32x32 images that gives
SqueezeNet (1.5 GiB) a quarter, ResNet-18 with the CIFAR stem (4.2 GiB) a half and ResNet-50/152
(23 and 49 GiB) a whole GPU.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Sequence

from study.config import TrainConfig

GIB = 2**30
SHARES = ((2 * GIB, 0.25), (5 * GIB, 0.5))  # a footprint up to this -> this share of a GPU; else 1


@dataclass(frozen=True)
class Packing:
    """The share of a GPU each trial takes, and the largest arm's footprint that chose it."""
    share: float
    footprint: int  # bytes
    model: str
    batch_size: int
    image_size: int

    def line(self) -> str:
        """'GPUs: 0.25 of a GPU per trial (4 per GPU), from the largest arm's training footprint, ...'."""
        share = "a whole GPU per trial" if self.share == 1 else f"{self.share:g} of a GPU per trial ({round(1 / self.share)} per GPU)"
        size = f"{self.footprint / GIB:.1f} GiB" if self.footprint >= GIB / 10 else f"{self.footprint / 2**20:.0f} MiB"
        return (f"GPUs: {share}, from the largest arm's training footprint, about {size} ({self.model}, batch "
                f"{self.batch_size}, {self.image_size}x{self.image_size}; sweep/packing.py); --gpus-per-trial "
                "overrides it")


def footprint(cfg: TrainConfig, classes: int) -> int:
    """Bytes one trial of `cfg` needs on a GPU to train (the module docstring's estimate)."""
    from sweep.vocabulary import architecture

    return _footprint(architecture(cfg, keep=("image_size", "batch_size", "dataset")), classes)


@functools.lru_cache(maxsize=None)
def _footprint(cfg: TrainConfig, classes: int) -> int:
    import torch

    from training.preflight import meta_model, probe_input

    model = meta_model(cfg, classes).eval()  # eval: batch norm takes a batch of one; the shapes are the same
    outputs = []
    hooks = [m.register_forward_hook(lambda _, __, out: outputs.append(out.numel() if isinstance(out, torch.Tensor)
                                                                         else 0))
             for m in model.modules() if not list(m.children())]
    with torch.no_grad():
        model(probe_input(model, cfg))
    for hook in hooks:
        hook.remove()
    params = sum(p.numel() for p in model.parameters())
    return 4 * (4 * params + 2 * sum(outputs) * cfg.batch_size)


def sweep_packing(params: dict[str, Any], plan: Any, record: dict[str, Any]) -> Packing:
    """:func:`packing` of the screen's trials of a planned sweep (sweep.planning.screen.plan_sweep)."""
    from sweep.planning.configs import check_trials
    from training.datasets import dataset_sizes

    configs = check_trials(params, plan.smoke, plan.search == "grid", record["space_name"])
    return packing(configs, {name: dataset_sizes(name).classes for name in {cfg.dataset for cfg in configs}})


def packing(configs: Sequence[TrainConfig], classes: dict[str, int]) -> Packing:
    """The share of a GPU for the trials `configs` (all take the same): the share of the arm with the
    largest footprint (`classes`: per dataset)."""
    largest = max(configs, key=lambda cfg: footprint(cfg, classes[cfg.dataset]))
    need = footprint(largest, classes[largest.dataset])
    share = next((share for limit, share in SHARES if need <= limit), 1.0)
    return Packing(share, need, largest.model, largest.batch_size, largest.image_size)
