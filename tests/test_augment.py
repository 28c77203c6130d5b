"""Batched augmentation: shape/dtype/device kept, randomness only from the generator, known outputs."""
from __future__ import annotations

from functools import partial

import pytest
import torch

from study.config import CHOICES, ConfigError
from training.augment import (POLICIES, augment_batch, batch_affine, batch_color_jitter, batch_cutout, batch_flip,
                              batch_random_crop)

RANDOM_STEPS = {
    "crop": partial(batch_random_crop, padding=4),
    "crop_zeros": partial(batch_random_crop, padding=4, pad_mode="zeros"),
    "flip": batch_flip,
    "affine": partial(batch_affine, max_degrees=15.0, max_translate=0.1),
    "jitter": partial(batch_color_jitter, brightness=0.2, contrast=0.2),
    "cutout": partial(batch_cutout, size=8),
}
RANDOM_POLICIES = [p for p in POLICIES if p != "none"]


def batch(n: int = 16, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def run(step, x: torch.Tensor, seed: int = 1) -> torch.Tensor:
    return step(x, generator=gen(seed))


def test_policy_names_match_the_config_schema():
    assert tuple(POLICIES) == CHOICES["augment"]


@pytest.mark.parametrize("name", list(RANDOM_STEPS) + [f"policy:{p}" for p in RANDOM_POLICIES])
def test_random_steps_keep_shape_change_batch_and_reproduce(name):
    step = (partial(augment_batch, policy=name.split(":")[1]) if name.startswith("policy:")
            else RANDOM_STEPS[name])
    x = batch()
    out = run(step, x)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert not torch.equal(out, x)
    assert torch.equal(out, run(step, x))  # same seed, same batch
    assert not torch.equal(out, run(step, x, seed=2))
    assert torch.equal(x, batch())  # the input is not modified in place
    assert out.min() >= 0 and out.max() <= 1


def test_none_is_identity():
    x = batch()
    assert augment_batch(x, "none", gen()) is x


def test_unknown_policy_lists_valid_ones():
    with pytest.raises(ConfigError, match="none, basic, paper, strong"):
        augment_batch(batch(), "heavy", gen())


def test_crop_shifts_content_by_the_drawn_offset():
    """Each output equals the padded image cropped at the offsets the generator draws."""
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    out = batch_random_crop(x, 2, gen(5), pad_mode="zeros")
    g = gen(5)
    dy = torch.randint(0, 5, (2,), generator=g)
    dx = torch.randint(0, 5, (2,), generator=g)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        assert torch.equal(out[i], padded[i, :, dy[i]:dy[i] + 8, dx[i]:dx[i] + 8])


def test_crop_of_one_image_with_every_offset():
    """A single marked pixel lands at (row + dy - pad, col + dx - pad) for every offset seen."""
    x = torch.zeros(256, 1, 8, 8)
    x[:, :, 3, 4] = 1.0
    out = batch_random_crop(x, 2, gen(0), pad_mode="zeros")
    rows, cols = out[:, 0].flatten(1).argmax(1).div(8, rounding_mode="floor"), out[:, 0].flatten(1).argmax(1) % 8
    assert set(zip(rows.tolist(), cols.tolist(), strict=True)) == {(r, c) for r in range(1, 6) for c in range(2, 7)}
    assert (out.sum(dim=(1, 2, 3)) == 1).all()  # the pixel never falls off an 8x8 crop with padding 2


def test_reflect_padding_has_no_black_border():
    out = batch_random_crop(torch.ones(8, 3, 8, 8) * 0.5, 4, gen())
    assert (out == 0.5).all()


def test_flip_mirrors_or_keeps_each_image():
    x = batch()
    out = batch_flip(x, gen())
    flipped = [torch.equal(o, xi.flip(2)) for o, xi in zip(out, x, strict=True)]
    kept = [torch.equal(o, xi) for o, xi in zip(out, x, strict=True)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True)) and any(flipped) and any(kept)


def test_affine_with_zero_range_is_identity():
    x = batch()
    assert torch.allclose(batch_affine(x, 0.0, 0.0, gen()), x, atol=1e-5)


def test_cutout_fills_one_clipped_square_per_image():
    x = torch.zeros(64, 3, 32, 32)
    out = batch_cutout(x, 8, gen(), fill=1.0)
    area = out[:, 0].sum(dim=(1, 2))
    assert (area <= 64).all() and (area >= 16).all() and (area == 64).any()  # clipped at borders
    assert torch.equal(out[:, 0], out[:, 2])


def test_color_jitter_with_zero_strength_is_identity():
    x = batch()
    assert torch.allclose(batch_color_jitter(x, 0.0, 0.0, gen()), x, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("policy", RANDOM_POLICIES)
def test_policies_run_on_cuda(policy):
    x = batch().cuda()
    out = augment_batch(x, policy, torch.Generator(device="cuda").manual_seed(0))
    assert out.device == x.device and out.shape == x.shape
