"""Train/val split rules and the device-resident loader."""
from __future__ import annotations

import pytest
import torch

from study.config import ConfigError
from training.loader import DeviceLoader, split_indices

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)


def images(n: int = 10, size: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Image i is filled with value i (so a batch tells which images it holds); label = i."""
    x = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, size, size).contiguous()
    return x, torch.arange(n)


def loader(n: int = 10, **kwargs) -> DeviceLoader:
    x, y = images(n)
    return DeviceLoader(x, y, **{"batch_size": 4, "mean": MEAN, "std": STD, "device": "cpu", **kwargs})


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------- split_indices
def test_full_split_sizes_and_disjointness():
    train, val = split_indices(1000, 0.1, 0, seed=0)
    assert len(train) == 900 and len(val) == 100
    assert train.dtype == torch.int64
    assert sorted(torch.cat([train, val]).tolist()) == list(range(1000))


def test_split_is_deterministic_per_seed():
    a, b, c = split_indices(500, 0.2, 0, 3), split_indices(500, 0.2, 0, 3), split_indices(500, 0.2, 0, 4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_subset_keeps_the_val_ratio():
    train, val = split_indices(50_000, 0.1, 900, seed=1)
    assert len(train) == 900 and len(val) == round(900 * 0.1 / 0.9) == 100
    assert not set(train.tolist()) & set(val.tolist())
    with pytest.raises(ConfigError, match="leaves no validation images"):  # an IndexError in a trial before
        split_indices(50_000, 0.0, 900, seed=1)


def test_subset_larger_than_the_data_is_an_error():
    assert len(split_indices(1000, 0.1, 900, 0)[0]) == 900  # 900 + 100 fits exactly
    with pytest.raises(ConfigError, match="subset=901 .* 1000 training images"):
        split_indices(1000, 0.1, 901, 0)


def test_bad_val_fraction():
    with pytest.raises(ConfigError, match="val_fraction"):
        split_indices(100, 1.0, 0, 0)


# ---------------------------------------------------------------------------------- DeviceLoader
def seen(batches) -> list[int]:
    return [i for _, y in batches for i in y.tolist()]


def test_shuffled_epoch_yields_every_index_once():
    data = loader(10, shuffle=True)
    assert len(data) == 3
    order = seen(data.batches(gen()))
    assert sorted(order) == list(range(10)) and order != list(range(10))
    assert order == seen(data.batches(gen()))  # the generator fixes the order
    assert order != seen(data.batches(gen(1)))


def test_unshuffled_epoch_keeps_order_and_partial_batch():
    data = loader(10)
    sizes = [len(y) for _, y in data.batches()]
    assert sizes == [4, 4, 2] and seen(data.batches()) == list(range(10))


def test_drop_last():
    data = loader(10, shuffle=True, drop_last=True)
    assert len(data) == 2 and [len(y) for _, y in data.batches(gen())] == [4, 4]
    tiny = loader(3, shuffle=True, drop_last=True)  # would leave no batch: keep the partial one
    assert len(tiny) == 1 and sorted(seen(tiny.batches(gen()))) == [0, 1, 2]


def test_images_and_labels_stay_paired_and_are_normalised():
    data = loader(10, shuffle=True)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    for x, y in data.batches(gen()):
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 4, 4)
        expected = (y.float().view(-1, 1, 1, 1) / 255 - mean) / std
        assert torch.allclose(x, expected.expand_as(x), atol=1e-5)


def test_channels_last_and_dtype():
    x, _ = next(loader(channels_last=True, dtype=torch.bfloat16).batches())
    assert x.is_contiguous(memory_format=torch.channels_last) and x.dtype == torch.bfloat16
    x, _ = next(loader().batches())
    assert x.is_contiguous()


def test_augmentation_is_applied_and_reproducible():
    x_u8 = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=gen(3))
    plain = DeviceLoader(x_u8, torch.zeros(8), batch_size=8, mean=MEAN, std=STD, device="cpu")
    aug = DeviceLoader(x_u8, torch.zeros(8), batch_size=8, mean=MEAN, std=STD, device="cpu", augment="strong")
    clean, _ = next(plain.batches())
    first, _ = next(aug.batches(gen()))
    assert not torch.allclose(first, clean) and torch.equal(first, next(aug.batches(gen()))[0])


def test_random_loader_needs_a_generator_and_a_known_policy():
    with pytest.raises(ValueError, match="Generator"):
        next(loader(shuffle=True).batches())
    with pytest.raises(ConfigError, match="augment="):
        loader(augment="wild")


@pytest.mark.parametrize("drop_last", [False, True])
def test_batches_are_views_of_chunks_and_cover_every_image_once(monkeypatch, drop_last):
    """A chunk of 3 batches (of 4 images, 4 x 3 x 4 x 4 floats each) at a time: 23 images make
    chunks of 12 and 11 (or 8 with drop_last), and each batch holds its own images, labels aligned."""
    import training.loader as loader_module

    monkeypatch.setattr(loader_module, "CHUNK_BYTES", 3 * 4 * (4 * 3 * 4 * 4))
    data = loader(23, shuffle=True, drop_last=drop_last, augment="none")
    assert data._chunk_batches == 3
    batches = list(data.batches(gen()))
    assert [len(y) for _, y in batches] == ([4] * 5 if drop_last else [4] * 5 + [3])
    labels = torch.cat([y for _, y in batches]).tolist()
    assert len(set(labels)) == len(labels) == (20 if drop_last else 23)
    for x, y in batches:  # image i holds value i: its pixels give back its label
        assert torch.allclose(x[:, 0, 0, 0] * STD[0] + MEAN[0], y.float() / 255, atol=1e-6)
    assert batches[0][0].untyped_storage().data_ptr() == batches[2][0].untyped_storage().data_ptr()
    assert batches[0][0].untyped_storage().data_ptr() != batches[3][0].untyped_storage().data_ptr()
