"""The benchmarks' pipelines give what training needs (values, not speed), and every script's
--quick run works and writes valid JSON. No timing is asserted: timings belong in
docs/PERFORMANCE.md, not in a test on a shared machine."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from benchmarks import common, throughput, time_to_accuracy
from benchmarks.pipeline import MEAN, STD, PerImageDataset
from training.loader import DeviceLoader

REPO = Path(__file__).resolve().parent.parent
MEAN_T, STD_T = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)


def uint8_images(n: int, size: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g), torch.arange(n) % 10


def ours(x, y, augment="none", batch_size=16, seed=0) -> tuple[torch.Tensor, torch.Tensor]:
    loader = DeviceLoader(x, y, batch_size=batch_size, mean=MEAN, std=STD, device="cpu", augment=augment)
    batches = list(loader.batches(torch.Generator().manual_seed(seed) if augment != "none" else None))
    return torch.cat([b for b, _ in batches]), torch.cat([lab for _, lab in batches])


def theirs(x, y, augment="none", batch_size=16, seed=0) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    batches = list(DataLoader(PerImageDataset(x, y, augment=augment), batch_size=batch_size))
    return torch.cat([b for b, _ in batches]), torch.cat([lab for _, lab in batches])


@pytest.fixture(autouse=True)
def keep_threads():
    """The scripts set torch's thread count; give the other tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------- pipeline values
def test_device_loader_without_augmentation_gives_the_normalised_premade_tensors():
    x, y = uint8_images(40)
    got, labels = ours(x, y)
    assert got.dtype == torch.float32 and got.shape == (40, 3, 8, 8)
    assert torch.equal(labels, y)
    assert torch.allclose(got, (x.float() / 255 - MEAN_T) / STD_T, atol=1e-6)


def test_per_image_pipeline_without_augmentation_matches_ours():
    x, y = uint8_images(40)
    (a, ya), (c, yc) = ours(x, y), theirs(x, y)
    assert torch.equal(ya, yc) and a.shape == c.shape and a.dtype == c.dtype
    assert torch.allclose(a, c, atol=1e-6)


def crops_and_flips(image: torch.Tensor, padding: int = 4) -> torch.Tensor:
    """Every image the `basic` policy can make of one [0, 1] image: 81 reflect-padded crops x 2."""
    _, h, w = image.shape
    padded = F.pad(image[None], (padding,) * 4, mode="reflect")[0]
    crops = torch.stack([padded[:, i:i + h, j:j + w] for i in range(2 * padding + 1) for j in range(2 * padding + 1)])
    return torch.cat([crops, crops.flip(3)])


@pytest.mark.parametrize("pipeline_fn", [ours, theirs], ids=["ours", "per-image"])
def test_basic_augmentation_makes_only_crops_and_flips_of_the_input(pipeline_fn):
    x, _ = uint8_images(12, size=16)
    got, labels = pipeline_fn(x, torch.arange(12), "basic", batch_size=5)
    raw = got * STD_T + MEAN_T  # back to [0, 1]
    for i, label in enumerate(labels.tolist()):
        candidates = crops_and_flips(x[label].float() / 255)  # label i belongs to image i here
        assert (candidates - raw[i]).abs().amax(dim=(1, 2, 3)).min() < 1e-5


def augmented_copies(pipeline_fn, augment: str, copies: int = 1600) -> torch.Tensor:
    """`copies` augmented versions of each of two 16x16 images: copies x 2 x 3 x 16 x 16."""
    base, _ = uint8_images(2, size=16, seed=3)
    got, _ = pipeline_fn(base.repeat(copies, 1, 1, 1), torch.arange(2).repeat(copies), augment, batch_size=800)
    return got.view(copies, 2, 3, 16, 16), base


@pytest.mark.parametrize("pipeline_fn", [ours, theirs], ids=["ours", "per-image"])
def test_basic_augmentation_has_the_exact_expected_mean(pipeline_fn):
    """The mean of many augmented copies approaches the average over all 162 crops and flips.
    Pixel spread across copies is about 1.2 (normalised units), so 1600 copies leave a mean
    absolute error near 0.023."""
    got, base = augmented_copies(pipeline_fn, "basic")
    expected = torch.stack([(crops_and_flips(img.float() / 255) - MEAN_T) / STD_T for img in base]).mean(1)
    assert (got.mean(0) - expected).abs().mean() < 0.035


def test_paper_augmentation_agrees_between_the_pipelines():
    """Same transforms, different generators: per-pixel mean and spread agree within sampling noise
    (mean absolute difference near 0.033 for 1600 copies each)."""
    a, _ = augmented_copies(ours, "paper")
    c, _ = augmented_copies(theirs, "paper")
    assert (a.mean(0) - c.mean(0)).abs().mean() < 0.05
    assert (a.std(0) - c.std(0)).abs().mean() < 0.05
    assert abs(a.mean() - c.mean()) < 0.02 and abs(a.std() - c.std()) < 0.02


# ---------------------------------------------------------------------------------- scripts
def read_result(path: Path, name: str) -> dict:
    result = json.loads(path.read_text())
    assert result["benchmark"] == name and result["quick"] is True and result["rows"]
    assert result["machine"]["torch"] == torch.__version__ and "before" in result["load_1min"]
    return result


def test_pipeline_script_quick_run_writes_json(tmp_path):
    out = tmp_path / "pipeline.json"
    done = subprocess.run([sys.executable, "benchmarks/pipeline.py", "--quick", "--threads", "1",
                           "--models", "squeezenet", "--out", str(out)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    row = read_result(out, "pipeline")["rows"][0]
    assert "a/b" in done.stdout.splitlines()[0]
    assert row["a ours img/s"] > 0 and row["b premade img/s"] > 0 and row["c per-image img/s"] > 0


def test_throughput_quick_run_writes_json(tmp_path):
    result = throughput.main(["--quick", "--threads", "1", "--models", "squeezenet", "--precisions", "fp32",
                              "--out", str(tmp_path / "t.json")])
    saved = read_result(tmp_path / "t.json", "throughput")
    assert len(saved["rows"]) == 2 == len(result["rows"])  # channels_last off and on
    assert all(0 < row["% of peak"] and row["img/s"] > 0 for row in saved["rows"])
    assert saved["peak"]["fp32"]["flops"] > 0


def test_time_to_accuracy_quick_run_writes_json(tmp_path):
    time_to_accuracy.main(["--quick", "--threads", "1", "--out", str(tmp_path / "tta.json")])
    saved = read_result(tmp_path / "tta.json", "time_to_accuracy")
    row = saved["rows"][0]
    assert isinstance(row["s to 5%"], float) and row["s to 99%"] == "not reached"
    assert len(saved["curves"]["squeezenet holistic"]) == row["epochs"] == 2


def test_export_quick_run_writes_json(tmp_path):
    from benchmarks import export

    export.main(["--quick", "--out", str(tmp_path / "export.json")])
    saved = read_result(tmp_path / "export.json", "export")
    assert [r["format"] for r in saved["rows"]] == ["PyTorch fp32", "ONNX fp32", "ONNX int8 (QDQ)"]
    assert saved["settings"]["threads"] == 1 and all(r["latency_ms_b1"] > 0 for r in saved["rows"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_packing_refuses_without_a_gpu_in_one_line():
    done = subprocess.run([sys.executable, "benchmarks/packing.py", "--quick"], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1 and "GPU" in done.stderr


def test_markdown_table_and_rounding():
    table = common.markdown_table([{"a": 1.23456, "b": "x"}, {"a": 12345.6}])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1.23 | x |", "| 12,346 |  |"]
    assert common._rounded({"v": 1.234567, "s": "k"}) == {"v": 1.235, "s": "k"}


@pytest.mark.slow
def test_sweep_efficiency_quick_run_writes_json(tmp_path):
    from benchmarks import sweep_efficiency

    sweep_efficiency.main(["--quick", "--out", str(tmp_path / "s.json")])
    saved = read_result(tmp_path / "s.json", "sweep_efficiency")
    screen, confirm, both, full = saved["rows"]
    assert full["trial-epochs"] == 4 * 2 * 2 and screen["trial-epochs"] <= 4 * 2  # 4 arms, 2 seeds, 2 epochs
    assert confirm["trial-epochs"] == 2 * confirm["trials"] == 2 * 2 * saved["comparison"]["arms confirmed"]
    assert both["trial-epochs"] == screen["trial-epochs"] + confirm["trial-epochs"]
    assert both["share of full epochs"] == pytest.approx(both["trial-epochs"] / full["trial-epochs"], rel=1e-3)
    assert set(saved["targets"]) == {"screen_plus_confirm_epochs_at_most_40%",
                                     "confirmed_arm_is_the_full_best_or_inside_its_interval",
                                     "spearman_all_arms_at_least_0.7", "full_best_by_test_in_the_confirm_set",
                                     "confirmed_best_in_the_full_top_3_by_test",
                                     "resolved_full_effects_have_the_screens_sign"}
    fair = saved["fairness"]
    assert fair["arms_ranked"] == 4 and -1 <= fair["spearman_all_arms"] <= 1
    assert {s["factor"] for s in fair["effect_signs"]} == {"activation", "recipe"}
    assert saved["comparison"]["arms in the full factorial"] == 4
