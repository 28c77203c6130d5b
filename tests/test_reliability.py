"""Reliability without Ray: faults injected for real into one trial and its files (docs/RELIABILITY.md).

A train.py process killed mid-run and resumed, two runs of one config and seed, a malicious checkpoint,
a YAML file that would run code, a tar archive that escapes its directory, corrupt archives and tensor
caches, a data directory nobody may write to, and bad values on both command lines. The Ray Tune side
(trials that raise or are killed, divergence in a sweep, the driver killed) is in
test_reliability_sweep.py.

Every test stays on this machine: downloads come from file:// URLs (``make_cifar_archive``), and
``offline`` points urllib's proxies at a closed loopback port in case any code tried the network.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch

import train
from sweep import run
from tests.test_datasets import CountingUrlopen, make_cifar_archive
from training import sources
from training.checkpoint import load_checkpoint
from training.config import ConfigError, TrainConfig, UserError
from training.datasets import load_dataset, prepare_dataset
from training.download import DatasetError, md5sum

ROOT = Path(__file__).resolve().parent.parent
# Keys that measure time, not learning: they differ between any two runs.
TIMING = ("images_per_sec", "epoch_time_s", "elapsed_s", "wall_time_s", "run_dir")
# A small run whose randomness is all exercised: init, split, data order, crop/flip, dropout, OneCycle.
REPRO = ["--dataset", "synthetic", "--subset", "512", "--epochs", "3", "--width", "0.25", "--batch-size", "32",
         "--augment", "basic", "--dropout", "0.3", "--scheduler", "onecycle", "--measure-latency", "false",
         "--device", "cpu", "--threads", "1", "--seed", "7", "--quiet"]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Any HTTP(S) request goes to a closed port on 127.0.0.1 instead of the internet."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost,::1")


def one_line_error(err: str, prog: str) -> str:
    """The error line of a CLI's stderr: exactly one, no traceback (progress lines of downloads aside)."""
    lines = [line for line in err.splitlines() if not line.startswith("downloading ")]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: ") and "Traceback" not in err, err
    return lines[0]


def rows_by_epoch(run_dir: Path) -> dict[int, dict]:
    """metrics.jsonl without timing; a resumed run's repeated epoch keeps its latest line."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {row["epoch"]: {k: v for k, v in row.items() if k not in TIMING} for row in rows}


def summary_of(run_dir: Path) -> dict:
    return {k: v for k, v in json.loads((run_dir / "summary.json").read_text()).items() if k not in TIMING}


def train_process(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "train.py", *REPRO, "--out-dir", str(out), *extra], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


# ------------------------------------------------------------------------------ reproducibility
@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    """One config and seed, three times: A in a fresh process, B in this one, C in a process SIGKILLed
    after its first epoch and then resumed here."""
    tmp_path = tmp_path_factory.mktemp("repro")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        for var in ("http_proxy", "https_proxy"):
            patch.setenv(var, "http://127.0.0.1:9")
        a = train_process(tmp_path / "a")
        c = train_process(tmp_path / "c")
        try:
            assert train.main([*REPRO, "--out-dir", str(tmp_path / "b")]) == 0
            metrics_c = tmp_path / "c" / "metrics.jsonl"
            deadline = time.monotonic() + 120
            while not (metrics_c.is_file() and metrics_c.read_text().count("\n") >= 1):
                assert c.poll() is None and time.monotonic() < deadline, c.stderr.read()
                time.sleep(0.02)
            c.send_signal(signal.SIGKILL)
            c.wait()
            assert a.wait(timeout=120) == 0, a.stderr.read()
            killed_after = len(rows_by_epoch(tmp_path / "c"))
            assert killed_after < 3 and not (tmp_path / "c" / "summary.json").exists(), "the kill came too late"
            assert train.main(["--resume", str(tmp_path / "c"), "--quiet"]) == 0
        finally:
            for process in (a, c):
                if process.poll() is None:
                    process.kill()
            torch.set_num_threads(threads)
    return tmp_path


def test_same_config_and_seed_give_identical_metrics_across_runs_and_after_a_kill(three_runs):
    """Every per-epoch metric and the summary agree exactly (CPU; no torch.use_deterministic_algorithms
    needed)."""
    runs = {name: (rows_by_epoch(three_runs / name), summary_of(three_runs / name)) for name in "abc"}
    assert list(runs["a"][0]) == [1, 2, 3]
    assert runs["b"] == runs["a"]
    assert runs["c"] == runs["a"]
    assert runs["a"][1]["test_acc"] > 10  # it learned something, so the comparison means something


def test_every_run_records_its_config_versions_and_git_revision(three_runs):
    saved = json.loads((three_runs / "a" / "config.json").read_text())
    assert TrainConfig.from_dict(saved["config"]) == TrainConfig.from_dict(
        {**TrainConfig().to_dict(), "dataset": "synthetic", "subset": 512, "epochs": 3, "width": 0.25,
         "batch_size": 32, "augment": "basic", "dropout": 0.3, "scheduler": "onecycle", "measure_latency": False,
         "device": "cpu", "threads": 1, "seed": 7})
    for pkg in ("torch", "ray", "numpy", "optuna", "ablation-sweeper"):
        assert saved["versions"][pkg] == importlib.metadata.version(pkg), pkg
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    assert saved["git_revision"].split("+")[0] == head.stdout.strip()
    assert saved["python"] and "host" in saved


# ------------------------------------------------------------------------------ safe files
class RunsCode:
    """Unpickling this object opens (creates) a file: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def write_malicious_checkpoint(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {"w": torch.zeros(1)}, "payload": RunsCode(marker)}, path)
    return path


def test_the_malicious_checkpoint_is_live(tmp_path):
    """Control: loaded the unsafe way, the planted checkpoint does run code."""
    marker = tmp_path / "pwned"
    torch.load(write_malicious_checkpoint(tmp_path / "evil.pt", marker), weights_only=False)
    assert marker.exists()


def test_checkpoints_load_weights_only_and_refuse_code(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = write_malicious_checkpoint(tmp_path / "evil" / "checkpoint.pt", marker)
    with pytest.raises(UserError, match="is not a readable checkpoint: .* weights-only loading refuses"):
        load_checkpoint(evil)
    # --init-from, and --resume of a run directory whose checkpoint was replaced
    assert train.main(["--dataset", "synthetic", "--epochs", "1", "--init-from", str(evil),
                       "--out-dir", str(tmp_path / "out")]) == 2
    one_line_error(capsys.readouterr().err, "train.py")
    run_dir = tmp_path / "resumable"
    (run_dir / "config.json").parent.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"config": TrainConfig(dataset="synthetic").to_dict()}))
    write_malicious_checkpoint(run_dir / "checkpoint" / "checkpoint.pt", marker)
    assert train.main(["--resume", str(run_dir)]) == 2
    assert "is not a readable checkpoint" in one_line_error(capsys.readouterr().err, "train.py")
    assert not marker.exists()


YAML_THAT_RUNS_CODE = '!!python/object/apply:os.system ["touch {marker}"]\n'


def test_yaml_loads_safely_config_and_space_files(tmp_path, capsys):
    marker = tmp_path / "pwned"
    config = tmp_path / "config.yaml"
    config.write_text(f"dataset: synthetic\nlr: {YAML_THAT_RUNS_CODE.format(marker=marker)}")
    assert train.main(["--config", str(config), "--out-dir", str(tmp_path / "out")]) == 2
    assert "is not valid YAML" in one_line_error(capsys.readouterr().err, "train.py")
    space = tmp_path / "space.yaml"
    space.write_text(f"params:\n  lr: {YAML_THAT_RUNS_CODE.format(marker=marker)}")
    assert run.main(["--space", str(space), "--storage-path", str(tmp_path / "runs")]) == 2
    assert "is not valid YAML" in one_line_error(capsys.readouterr().err, "run.py")
    assert not marker.exists() and not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


def escaping_cifar_archive(tmp_path: Path, monkeypatch) -> Path:
    """A CIFAR-10 archive (md5 as published, for this test) whose last member climbs out: ../escaped.txt."""
    spec = sources.CIFAR_SPECS["cifar10"]
    archive = tmp_path / "upstream" / spec.filename
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        for name, blob in ((f"{spec.folder}/batches.meta", pickle.dumps({"label_names": []})),
                           ("../escaped.txt", b"escaped")):
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    monkeypatch.setitem(sources.CIFAR_SPECS, "cifar10",
                        dataclasses.replace(spec, url=archive.as_uri(), md5=md5sum(archive)))
    return archive


def test_a_malicious_dataset_archive_is_refused_end_to_end(tmp_path, monkeypatch, capsys):
    """Through the dataset loader and train.py, not only safe_extract (test_datasets.py crafts every kind
    of escape against safe_extract itself: .., absolute, symlink, hardlink, device; with and without
    Python's data filter)."""
    escaping_cifar_archive(tmp_path, monkeypatch)
    data = tmp_path / "work" / "data"
    with pytest.raises(DatasetError, match="refusing archive member '../escaped.txt'"):
        load_dataset("cifar10", str(data))
    assert train.main(["--dataset", "cifar10", "--data-dir", str(data), "--out-dir", str(tmp_path / "out")]) == 2
    assert "refusing archive member" in one_line_error(capsys.readouterr().err, "train.py")
    assert not list(tmp_path.rglob("escaped.txt"))
    assert sorted(p.name for p in data.iterdir()) == ["cifar-10-python.tar.gz"]  # no scratch folder left
    assert not (tmp_path / "out").exists()


TINY_CIFAR = ["--dataset", "cifar10", "--epochs", "1", "--batch-size", "4", "--eval-batch-size", "8",
              "--width", "0.25", "--val-fraction", "0.2", "--measure-latency", "false", "--quiet"]


def test_a_corrupt_archive_is_fetched_once_more_then_fails_clearly(tmp_path, monkeypatch, capsys):
    make_cifar_archive(tmp_path, "cifar10", monkeypatch)
    upstream = tmp_path / "upstream" / "cifar-10-python.tar.gz"
    data = tmp_path / "data"
    data.mkdir()
    good = upstream.read_bytes()
    (data / upstream.name).write_bytes(good[:-100] + bytes(100))  # the local copy went bad
    fetches = CountingUrlopen(monkeypatch)
    assert len(load_dataset("cifar10", str(data)).train_y) == 20
    assert fetches.calls == 1 and (data / upstream.name).read_bytes() == good

    upstream.write_bytes(good[:len(good) // 2])  # now the mirror serves a truncated file every time
    (data / upstream.name).unlink()
    (data / "cifar10.pt").unlink()
    assert train.main([*TINY_CIFAR, "--data-dir", str(data), "--out-dir", str(tmp_path / "bad")]) == 2
    err = one_line_error(capsys.readouterr().err, "train.py")
    assert "twice gave a file with md5" in err and f"put cifar-10-python.tar.gz (md5 " in err
    assert fetches.calls == 3  # the first run's one, then two
    assert list(data.iterdir()) == [] and not (tmp_path / "bad").exists()


def test_a_corrupt_tensor_cache_is_rebuilt_from_the_verified_archive(tmp_path, monkeypatch):
    make_cifar_archive(tmp_path, "cifar10", monkeypatch)
    data = tmp_path / "data"
    first = load_dataset("cifar10", str(data))
    cache = data / "cifar10.pt"
    for damaged in (cache.read_bytes()[: cache.stat().st_size // 2], b"not a tensor file"):
        cache.write_bytes(damaged)  # a full disk, a copy cut short
        prepare_dataset("cifar10", str(data))  # what the sweep driver does before any trial
        assert torch.equal(torch.load(cache, weights_only=True)["train_x"], first.train_x)
        cache.write_bytes(damaged)
        assert torch.equal(load_dataset("cifar10", str(data)).train_x, first.train_x)  # what a trial does


def test_a_missing_dataset_offline_says_where_to_put_it(tmp_path, monkeypatch, capsys):
    make_cifar_archive(tmp_path, "cifar10", monkeypatch)
    (tmp_path / "upstream" / "cifar-10-python.tar.gz").unlink()  # the mirror is gone
    assert train.main([*TINY_CIFAR, "--data-dir", str(tmp_path / "data"), "--out-dir", str(tmp_path / "o")]) == 2
    err = one_line_error(capsys.readouterr().err, "train.py")
    assert "cannot download file://" in err and f"into {tmp_path / 'data'} and run again" in err
    assert not (tmp_path / "o").exists()


@pytest.fixture
def unwritable_dir(tmp_path):
    """A directory that even root cannot write into (the immutable attribute), or one without write
    permission for other users."""
    path = tmp_path / "readonly"
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
        return
    if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
        pytest.skip("root, and `chattr +i` is not available on this filesystem: no way to make a directory "
                    "unwritable (test_datasets.py::test_unwritable_data_dir covers a file in the way)")
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_data_directory_without_write_permission_is_one_line_and_writes_nothing(unwritable_dir, tmp_path,
                                                                                   monkeypatch, capsys):
    make_cifar_archive(tmp_path, "cifar10", monkeypatch)
    fetches = CountingUrlopen(monkeypatch)
    assert train.main([*TINY_CIFAR, "--data-dir", str(unwritable_dir), "--out-dir", str(tmp_path / "o")]) == 2
    err = one_line_error(capsys.readouterr().err, "train.py")
    assert f"data directory {unwritable_dir} is not writable" in err and "ABLATION_DATA_DIR" in err
    assert fetches.calls == 0 and list(unwritable_dir.iterdir()) == [] and not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("args, words", [
    (["--model", "squeezenet", "--pretrained", "true"], "pretrained=true needs a ResNet"),
    (["--lr", "nan"], "lr=nan must be a finite number"),
    (["--weight-decay", "inf"], "weight_decay=inf must be a finite number"),
    (["--finetune-class-weight", "-2"], "finetune_class_weight=-2.0 must be > 0"),
    (["--freeze", "backbone", "--model", "resnet18"], "freeze=backbone trains only the classifier"),
    (["--threads", "-1"], "threads=-1 must be >= 0"),
    (["--no-such-flag", "1"], "unrecognized arguments: --no-such-flag"),
])
def test_train_py_bad_input_is_one_line_exit_2(args, words, tmp_path, capsys):
    argv = ["--dataset", "synthetic", *args, "--out-dir", str(tmp_path / "o")]
    if args[0] == "--no-such-flag":  # argparse exits by itself
        with pytest.raises(SystemExit) as exit_:
            train.main(argv)
        code = exit_.value.code
    else:
        code = train.main(argv)
    assert code == 2 and words in one_line_error(capsys.readouterr().err, "train.py")
    assert not (tmp_path / "o").exists()


def test_train_py_bad_input_as_a_user_sees_it(tmp_path):
    """A fresh process: its exit status and its whole stderr (no usage dump, no traceback)."""
    for args, words in ((["--no-such-flag", "1"], "unrecognized arguments"),
                        (["--model", "squeezenet", "--pretrained", "true"], "needs a ResNet")):
        proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--dataset", "synthetic", *args,
                               "--out-dir", str(tmp_path / "o")], capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 2 and words in one_line_error(proc.stderr, "train.py")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv, words", [
    (["--set", "pretrained=true"], "pretrained=true needs a ResNet"),
    (["--set", "lr=nan"], "lr=nan must be a finite number"),
    (["--set", "model=resnet18", "--set", "freeze=backbone"], "freeze=backbone trains only the classifier"),
    # Found here; each one is a traceback or a sweep that never ends today (docs/RELIABILITY.md):
    (["--grace-period", "0"], "--grace-period"),  # ASHA asserts grace_period > 0 inside Tuner.fit
    (["--reduction-factor", "1"], "--reduction-factor"),  # ASHA asserts reduction_factor > 1
    (["--cpus-per-trial", "-1"], "--cpus-per-trial"),  # Ray: "Tracked actor is not managed..."
    (["--max-failures", "-1"], "--max-failures"),  # Ray reads -1 as "retry forever"
])
def test_sweep_bad_input_is_one_line_exit_2_before_anything_runs(argv, words, tmp_path, capsys):
    """Checked while planning (so --dry-run refuses them too): no Ray is started, nothing is written."""
    out = tmp_path / "runs"
    code = run.main(["--space", "smoke", *argv, "--dry-run", "--storage-path", str(out)])
    err = capsys.readouterr().err
    assert code == 2, f"accepted: {argv}"
    assert words in one_line_error(err, "run.py")
    assert not out.exists()


def test_nan_and_inf_are_refused_in_every_float_knob():
    floats = [name for name, value in TrainConfig().to_dict().items() if isinstance(value, float)]
    assert "lr" in floats and len(floats) >= 10
    for name in floats:
        for bad in ("nan", "inf", "-inf"):
            with pytest.raises(ConfigError, match=f"{name}=.* must be a finite number"):
                TrainConfig.from_dict({name: bad})
