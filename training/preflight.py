"""What can be known about a trial before it runs, checked before anything is written.

``check_trial`` is the one check of a trial's config against its dataset's real sizes and the
machine: the train/validation split, the hard classes of fine-tuning, whether the model can take the
image size, and whether the model and data can fit in memory. train.py runs it before creating its
run directory; the sweep driver runs it once per distinct arm (seeds aside) before claiming its
experiment directory. ``check_init_from`` checks a starting checkpoint against the model (train.py
only: in a sweep the file may exist only on the worker nodes).
"""
from __future__ import annotations

import os

import torch
from torch import nn

from study.config import ConfigError, TrainConfig, is_user_model
from training.datasets import DatasetSizes
from training.loader import split_sizes

BYTES_PER_PARAM = 4  # fp32 weights; training needs more (gradients, optimiser state, activations)
MIN_STEPS_PER_EPOCH = 20  # fewer optimiser steps an epoch rarely learn anything in a few epochs


def check_trial(cfg: TrainConfig, sizes: DatasetSizes) -> None:
    """Raise ConfigError (one line, naming the knob) for a trial that cannot run on this dataset."""
    split_sizes(sizes.train, cfg.val_fraction, cfg.subset)
    if cfg.finetune_hard_classes > sizes.classes:
        raise ConfigError(f"finetune_hard_classes={cfg.finetune_hard_classes} but {sizes.name} has "
                          f"{sizes.classes} classes")
    model = meta_model(cfg, sizes.classes)
    if is_user_model(cfg.model):
        from models.user import check_output

        check_output(model, cfg, sizes.classes)
    else:
        check_image_size(model, cfg)
    # A lower bound, so that only what cannot fit is refused: the weights and the uint8 dataset, both
    # in this machine's memory at the start of every trial (on any device); nothing for activations.
    needed = sum(p.numel() for p in model.parameters()) * BYTES_PER_PARAM + sizes.images * 3 * cfg.image_size ** 2
    available = physical_memory()
    if needed > available:
        raise ConfigError(f"model={cfg.model} width={cfg.width:g} at image_size={cfg.image_size} needs at least "
                          f"{needed / 2**30:.1f} GiB for its weights and the {sizes.name} images; this machine has "
                          f"{available / 2**30:.1f} GiB")


def steps_per_epoch(cfg: TrainConfig, sizes: DatasetSizes) -> int:
    """Optimiser steps in one epoch: the training split over the batch size (the last partial batch
    dropped, as training.loader does unless the split is smaller than one batch)."""
    n_fit, _ = split_sizes(sizes.train, cfg.val_fraction, cfg.subset)
    return max(1, n_fit // cfg.batch_size)


def few_steps(steps: int, train_images: int, batch_size: int) -> str:
    """The warning for too few optimiser steps an epoch ('' when there are enough)."""
    if steps >= MIN_STEPS_PER_EPOCH:
        return ""
    return (f"only {steps} optimiser steps per epoch ({train_images} training images / batch {batch_size}): too "
            "few to learn much; use a smaller batch_size or a larger subset")


def meta_model(cfg: TrainConfig, num_classes: int) -> nn.Module:
    """The model on PyTorch's meta device: shapes only, no memory; without ImageNet weights (no
    download here: the shapes are the same) and unfrozen. A user's network is built on the CPU: its
    code may make tensors of its own, which would not be on the meta device."""
    from models import create_model

    if is_user_model(cfg.model):
        return create_model(cfg, num_classes)
    bare = cfg.replace(pretrained=False, fresh_stem=False, freeze="none")
    with torch.device("meta"):
        return create_model(bare, num_classes)


def probe_input(model: nn.Module, cfg: TrainConfig) -> torch.Tensor:
    """One empty image on the device of `model`'s weights (meta, or the CPU for a
    user's network: meta_model)."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return torch.zeros(1, 3, cfg.image_size, cfg.image_size, device=device)


def check_image_size(model: nn.Module, cfg: TrainConfig) -> None:
    """A forward pass on the meta device: a ConfigError when the model cannot take the image size
    (its feature map shrinks below 1x1)."""
    try:
        model.eval()(torch.empty(1, 3, cfg.image_size, cfg.image_size, device="meta"))
    except RuntimeError as exc:
        raise ConfigError(f"image_size={cfg.image_size} is too small for model={cfg.model} with "
                          f"stem={cfg.stem}: {str(exc).splitlines()[0]}") from None


def physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_init_from(cfg: TrainConfig, num_classes: int) -> None:
    """`init_from` must hold model weights whose names and shapes are the model's own."""
    from training import checkpoint as ckpt

    if not cfg.init_from:
        return
    weights = ckpt.model_weights(ckpt.load_checkpoint(cfg.init_from))
    expected = {k: tuple(v.shape) for k, v in meta_model(cfg, num_classes).state_dict().items()}
    given = {k: tuple(v.shape) for k, v in weights.items() if isinstance(v, torch.Tensor)}
    missing, extra = sorted(set(expected) - set(given)), sorted(set(given) - set(expected))
    wrong = sorted(k for k in set(expected) & set(given) if expected[k] != given[k])
    if missing or extra or wrong:
        what = (f"{len(missing)} missing (e.g. {missing[0]})" if missing else
                f"{len(extra)} unexpected (e.g. {extra[0]})" if extra else
                f"{wrong[0]} is {list(given[wrong[0]])}, the model's is {list(expected[wrong[0]])}")
        raise ConfigError(f"init_from={cfg.init_from} does not fit model={cfg.model} with {num_classes} "
                          f"classes: weights {what}")
