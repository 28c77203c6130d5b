"""Benchmark 1, the input pipeline: images/s of the train step fed three ways, measured side by side.

  (a) ours: uint8 images resident on the device, batched by index, augmented in batch there
      (training.loader.DeviceLoader + training.augment);
  (b) the ceiling: the same step over the very batches (a) made, made beforehand;
  (c) the studies' way: a torch DataLoader over a Dataset that augments one image per __getitem__
      with tensor ops (what torchvision's RandomCrop(32, padding=4) + RandomHorizontalFlip +
      ToTensor + Normalize do), copied to the device per batch.

a/b is the pipeline's overhead (1.0 = none), a/c the speed-up over the usual way. The variants run
interleaved for --rounds rounds and each reports its fastest round (timeit's rule: on a shared
machine the slower rounds measure the neighbours, not the code). "data img/s" columns time the pipelines alone, without a model.

    python benchmarks/pipeline.py --quick
    python benchmarks/pipeline.py --out benchmarks/results/cpu-pipeline.json
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import from the repository root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from benchmarks import common  # noqa: E402
from training.datasets import NORMALIZATION  # noqa: E402
from training.loader import DeviceLoader  # noqa: E402
from training.metrics import sync  # noqa: E402

MEAN, STD = NORMALIZATION["cifar10"]


class PerImageDataset(Dataset):
    """The studies' pipeline: one uint8 image at a time -> [0, 1] floats -> per-image random
    transforms drawn from torch's global RNG (as torchvision's are) -> normalised."""

    def __init__(self, x_uint8: torch.Tensor, y: torch.Tensor, mean=MEAN, std=STD, augment: str = "basic",
                 padding: int = 4) -> None:
        self.x, self.y, self.augment, self.padding = x_uint8, y, augment, padding
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.x[i].float() / 255
        if self.augment != "none":
            img = random_flip(random_crop(img, self.padding))
        if self.augment in ("paper", "strong"):
            img = color_jitter(random_affine(img, 15.0, 0.1), 0.2, 0.2)
        if self.augment == "strong":
            img = cutout(img, 8)
        return (img - self.mean) / self.std, self.y[i]


def random_crop(img: torch.Tensor, padding: int) -> torch.Tensor:
    """Reflect-pad, then crop the original size at a random offset (our batch_random_crop's default)."""
    _, h, w = img.shape
    padded = F.pad(img[None], (padding,) * 4, mode="reflect")[0]
    top, left = torch.randint(0, 2 * padding + 1, (2,)).tolist()
    return padded[:, top:top + h, left:left + w]


def random_flip(img: torch.Tensor) -> torch.Tensor:
    return img.flip(2) if torch.rand(()) < 0.5 else img


def random_affine(img: torch.Tensor, degrees: float, translate: float) -> torch.Tensor:
    angle = math.radians(float(torch.empty(()).uniform_(-degrees, degrees)))
    tx, ty = (torch.empty(2).uniform_(-translate, translate) * 2).tolist()
    theta = torch.tensor([[[math.cos(angle), -math.sin(angle), tx], [math.sin(angle), math.cos(angle), ty]]])
    grid = F.affine_grid(theta, [1, *img.shape], align_corners=False)
    return F.grid_sample(img[None], grid, align_corners=False)[0]


def color_jitter(img: torch.Tensor, brightness: float, contrast: float) -> torch.Tensor:
    b, c = (1 + (torch.rand(2) * 2 - 1) * torch.tensor([brightness, contrast])).tolist()
    img = (img * b).clamp(0, 1)
    grey = (0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2]).mean()
    return torch.lerp(grey.expand_as(img), img, c).clamp(0, 1)


def cutout(img: torch.Tensor, size: int, fill: float = 0.5) -> torch.Tensor:
    _, h, w = img.shape
    cy, cx = int(torch.randint(0, h, ())), int(torch.randint(0, w, ()))
    img = img.clone()
    img[:, max(cy - size // 2, 0):cy - size // 2 + size, max(cx - size // 2, 0):cx - size // 2 + size] = fill
    return img


def per_image_loader(x: torch.Tensor, y: torch.Tensor, batch_size: int, augment: str, workers: int,
                     device: torch.device) -> DataLoader:
    return DataLoader(PerImageDataset(x, y, augment=augment), batch_size=batch_size, shuffle=True,
                      drop_last=True, num_workers=workers, pin_memory=device.type == "cuda",
                      persistent_workers=workers > 0)


def to_device(batches, device: torch.device, channels_last: bool):
    """The studies' copy of each CPU batch to the device (asynchronous from pinned memory)."""
    for x, y in batches:
        x = x.to(device, non_blocking=True)
        yield (x.contiguous(memory_format=torch.channels_last) if channels_last else x), y.to(device, non_blocking=True)


def drain(batches, device: torch.device) -> int:
    """Pull every batch (the pipeline alone, no model); the images it made."""
    images = sum(int(y.shape[0]) for _, y in batches)
    sync(device)
    return images


def measure_model(name: str, augment: str, args, device: torch.device) -> dict:
    trainer = common.Trainer(name, device, channels_last=True)  # fit()'s defaults
    bs, steps = args.batch_size, args.steps
    x, y = common.synthetic_images(bs * steps)
    ours = DeviceLoader(x, y, batch_size=bs, mean=MEAN, std=STD, device=device, augment=augment,
                        shuffle=True, drop_last=True, channels_last=True)
    gen = torch.Generator(device=device).manual_seed(0)
    premade = [(a.clone(), b.clone()) for a, b in ours.batches(gen)]
    theirs = per_image_loader(x, y, bs, augment, args.workers, device)
    variants = {"a": lambda: ours.batches(gen), "b": lambda: iter(premade),
                "c": lambda: to_device(theirs, device, channels_last=True)}
    for key in "bbac":  # warm-up: allocator, oneDNN/cuDNN kernel choice, DataLoader workers
        trainer.train(variants[key]())
    rate = {k: [] for k in variants}
    data_rate = {"a": [], "c": []}
    for _ in range(args.rounds):
        for key, make in variants.items():
            rate[key].append(trainer.train(make()).images_per_sec)
        for key in data_rate:
            t = common.seconds(lambda: drain(variants[key](), device), device)
            data_rate[key].append(bs * steps / t)
    a, b, c = (max(rate[k]) for k in "abc")
    return {"model": name, "augment": augment, "precision": trainer.precision, "batch": bs, "a ours img/s": a,
            "b premade img/s": b, "c per-image img/s": c, "a/b": a / b, "a/c": a / c,
            "data a img/s": max(data_rate["a"]), "data c img/s": max(data_rate["c"]),
            "data a/c": max(data_rate["a"]) / max(data_rate["c"])}


def main(argv: list[str] | None = None) -> dict:
    p = common.make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["squeezenet", "resnet18"])
    p.add_argument("--augment", nargs="+", default=["basic"], choices=("none", "basic", "paper", "strong"),
                   help="policies to compare (basic: pad-crop + flip; paper adds rotation/translation/jitter)")
    p.add_argument("--batch-size", type=int, help="default: 512 on CUDA, 64 on CPU, 8 with --quick")
    p.add_argument("--steps", type=int, help="batches per measurement (default: 50 CUDA, 6 CPU, 2 quick)")
    p.add_argument("--rounds", type=int, help="interleaved rounds; the fastest is reported (default 5, quick 1)")
    p.add_argument("--workers", type=int, help="DataLoader workers of (c) (default: 4 on CUDA, 0 on CPU, "
                                               "where workers would take the training threads' cores)")
    args = p.parse_args(argv)
    device = common.setup(args)
    cuda = device.type == "cuda"
    args.batch_size = args.batch_size or (8 if args.quick else 512 if cuda else 64)
    args.steps = args.steps or (2 if args.quick else 50 if cuda else 6)
    args.rounds = args.rounds or (1 if args.quick else 5)
    args.workers = (4 if cuda else 0) if args.workers is None else args.workers
    rows = [measure_model(name, aug, args, device) for name in args.models for aug in args.augment]
    settings = {k: getattr(args, k) for k in ("models", "augment", "batch_size", "steps", "rounds", "workers")}
    return common.finish(args, device, "pipeline", settings, rows)


if __name__ == "__main__":
    main()
