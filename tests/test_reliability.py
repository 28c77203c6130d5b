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

import contextlib
import dataclasses
import importlib.metadata
import io
import json
import pickle
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import train
from study.config import ConfigError, TrainConfig, UserError
from sweep import run
from tests.helpers import CountingUrlopen, fill, make_cifar_archive, needs_fashion_mnist, tmpfs
from training import sources
from training.checkpoint import load_checkpoint
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
    """The error line of a CLI's stderr: exactly one, no traceback (progress lines of downloads and
    warnings about the run itself, such as too few steps per epoch, aside)."""
    lines = [line for line in err.splitlines() if not line.startswith(("downloading ", f"{prog}: warning: "))]
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


def train_process_after_epoch_1(run_dir: Path) -> subprocess.Popen:
    """train_process, once its first epoch's metrics line is written."""
    process = train_process(run_dir)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 1):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.02)
    return process


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
    assert "twice gave a file with md5" in err and "put cifar-10-python.tar.gz (md5 " in err
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
    # numbers that are not numbers (one ran as if valid, one asserted inside Ray)
    (["--reduction-factor", "nan"], "--reduction-factor: 'nan' is not a finite number"),
    (["--cpus-per-trial", "inf"], "--cpus-per-trial: 'inf' is not a finite number"),  # an OverflowError before
    (["--gpus-per-trial", "nan"], "--gpus-per-trial: 'nan' is not a finite number"),
    (["--set", "seed=99999999999999999999999"], "must be in [0, 2**32 - 1]"),  # an overflow inside torch before
    (["--set", "seed=-1"], "seed=-1 must be in [0, 2**32 - 1]"),
    # sizes counted, not enumerated (a MemoryError before)
    (["--samples", "1000000000000"], "--samples 1,000,000,000,000 is more than a sweep plans"),
    # edge inputs (an IndexError in every trial; a misleading "already exists"; "choose a
    # writable --storage-path" for a name too long)
    (["--set", "val_fraction=0"], "val_fraction=0.0 leaves no validation images out of 512"),
    (["--name", "."], "--name '.' must be a plain directory name"),
    (["--name", "x" * 300], "--name is 300 bytes long: at most 200"),
    # issue 37, class 8: control characters reached directory names, logs and the terminal
    (["--name", "two\nlines"], "--name 'two\\nlines' holds the control character '\\n'"),
    (["--name", "red\x1b[31m"], "holds the control character '\\x1b'"),
    (["--name", "abc\u202edcba"], "holds the control character '\\u202e'"),
    (["--trial-timeout", "0"], "--trial-timeout: '0' is not a length of time"),
    (["--trial-timeout", "nan"], "--trial-timeout: 'nan' is not a length of time"),
    (["--trial-timeout=-5m"], "--trial-timeout: '-5m' is not a length of time"),
    (["--time-budget", "8x"], "--time-budget: '8x' is not a length of time (seconds, or with a unit: 90s, 10m"),
    (["--time-budget", "inf"], "--time-budget: 'inf' is not a length of time"),
])
def test_sweep_bad_input_is_one_line_exit_2_before_anything_runs(argv, words, tmp_path, capsys):
    """Checked while planning (so --dry-run refuses them too): no Ray is started, nothing is written."""
    out = tmp_path / "runs"
    code = run.main(["--space", "smoke", *argv, "--dry-run", "--storage-path", str(out)])
    err = capsys.readouterr().err
    assert code == 2, f"accepted: {argv}"
    assert words in one_line_error(err, "run.py")
    assert not out.exists()


def hostile_files(tmp: Path) -> dict[str, Path]:
    """Space or config files that exhaust a naive reader: nesting past any recursion limit, a YAML
    alias bomb (9**7 values from 70 written), a grid of a million arms."""
    files = {"deep.yaml": "params:\n  lr: " + "[" * 5000 + "]" * 5000 + "\n",
             "deep.json": '{"params": {"lr": ' + "[" * 3000 + "]" * 3000 + "}}",
             "bomb.yaml": 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
                 f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdef", "bcdefg")) + "params:\n  lr: *g\n",
             "million.yaml": "params:\n  dataset: synthetic\n" + "".join(
                 f"  {knob}: {{grid: [{', '.join(str(v / 1000 + 0.001) for v in range(100))}]}}\n"
                 for knob in ("lr", "weight_decay", "momentum"))}
    for name, text in files.items():
        (tmp / name).write_text(text)
    return {name: tmp / name for name in files}


@pytest.mark.parametrize("name, words", [("deep.yaml", "nests deeper than 32 levels"),
                                         ("deep.json", "nests deeper than 32 levels"),
                                         ("bomb.yaml", "expands to more than 100,000 values"),
                                         ("million.yaml", "a grid of 1,000,000 arms is more than a sweep plans")])
def test_files_that_exhaust_the_parser_or_the_planner_are_one_line_at_once(name, words, tmp_path, capsys):
    """Issue 27, class 1: a RecursionError traceback, an exhausted memory, minutes of planning before."""
    path = hostile_files(tmp_path)[name]
    started = time.monotonic()
    assert run.main(["--space", str(path), "--dry-run", "--storage-path", str(tmp_path / "runs")]) == 2
    assert words in one_line_error(capsys.readouterr().err, "run.py") and time.monotonic() - started < 10
    assert not (tmp_path / "runs").exists()
    if name != "million.yaml":  # the one reader of config and space files: train.py --config too
        assert train.main(["--config", str(path), "--out-dir", str(tmp_path / "o")]) == 2
        assert words in one_line_error(capsys.readouterr().err, "train.py") and not (tmp_path / "o").exists()



def test_record_files_nested_past_any_reader_are_damaged_files_not_tracebacks(tmp_path, capsys):
    """Issue 37, class 2: a sweep.json or a result line nested a few thousand levels was a
    RecursionError traceback in the report and the driver. Every record file goes through one reader
    (study.layout.loads) with a depth guard: the driver and export refuse in one line, the report
    reads the frames without the record, a deep result line is skipped like a line cut short."""
    from analysis.report import main as report_main
    from study import layout
    from study.ray_files import read_results

    def nest(levels: int) -> str:
        return "[" * levels + "1" + "]" * levels

    deep = nest(3000)
    for text in (deep, nest(layout.RECORD_DEPTH + 1)):
        with pytest.raises(ValueError, match=f"nested deeper than {layout.RECORD_DEPTH} levels"):
            layout.loads(text)
    assert layout.loads(nest(layout.RECORD_DEPTH)) is not None
    experiment = tmp_path / "stages"
    shutil.copytree(ROOT / "results" / "stages", experiment)
    record = (experiment / "sweep.json").read_text().rstrip()
    (experiment / "sweep.json").write_text(record[:-1] + f', "extra": {deep}}}')
    capsys.readouterr()
    assert run.main(["--resume", str(experiment)]) == 2
    assert "sweep.json is not valid JSON (nested deeper than 64 levels)" in one_line_error(
        capsys.readouterr().err, "run.py")
    assert report_main([str(experiment), "--out", str(tmp_path / "report")]) == 0
    assert "| holistic" in (tmp_path / "report" / "report.md").read_text()
    result = tmp_path / "result.json"
    result.write_text(json.dumps({"epoch": 1}) + "\n" + f'{{"epoch": {deep}}}' + "\n" + json.dumps({"epoch": 2}))
    assert read_results(result) == [{"epoch": 1}, {"epoch": 2}]
    config = tmp_path / "trial_config.json"
    config.write_text(f'{{"config": {deep}}}')
    with pytest.raises(UserError, match="cannot be read .nested deeper than 64 levels"):
        layout.read_config_record(config)



def test_a_phase_record_without_a_part_its_readers_index_is_left_out_in_words(tmp_path, capsys):
    """Issue 37, class 3: a confirm phase recorded without its seeds ended the report in a KeyError.
    Each key of each phase of a committed record taken out in turn: the driver refuses the record in
    one line or reads it, and the report reads the experiment without the damaged part and says so."""
    from analysis.report import sections
    from study import layout
    from study.load import load

    experiment = tmp_path / "asha"
    shutil.copytree(ROOT / "results" / "ablation-asha", experiment)
    record = json.loads((experiment / "sweep.json").read_text())
    said = []
    for phase in layout.PHASES:
        for key in record["phases"][phase]:
            damaged = json.loads(json.dumps(record))
            del damaged["phases"][phase][key]
            (experiment / "sweep.json").write_text(json.dumps(damaged))
            with contextlib.suppress(UserError):
                layout.read_sweep(experiment, needs=("plan", "params"))
            found = sections(load(experiment))
            said += [f"{phase}.{key}"] if any("Its record is damaged" in s.text for s in found) else []
    assert {"confirm.seeds", "confirm.factors", "confirm.dir", "screen.dir"} <= set(said), said


def test_nan_and_inf_are_refused_in_every_float_knob():
    floats = [name for name, value in TrainConfig().to_dict().items() if isinstance(value, float)]
    assert "lr" in floats and len(floats) >= 10
    for name in floats:
        for bad in ("nan", "inf", "-inf"):
            with pytest.raises(ConfigError, match=f"{name}=.* must be a finite number"):
                TrainConfig.from_dict({name: bad})


# ------------------------------------------------------------------------------ train.py
def files_of(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_an_existing_run_is_refused_and_replaced_only_with_overwrite(three_runs, tmp_path, capsys):
    """--out-dir naming a finished run: one line naming --resume and a fresh directory, nothing touched;
    --overwrite replaces train.py's own files (metrics.jsonl holds the new run only) and nothing else."""
    run_dir = tmp_path / "run"
    shutil.copytree(three_runs / "a", run_dir)
    (run_dir / "notes.txt").write_text("mine")
    before = files_of(run_dir)
    assert train.main([*REPRO, "--out-dir", str(run_dir)]) == 2
    err = one_line_error(capsys.readouterr().err, "train.py")
    assert f"--resume {run_dir}" in err and "fresh --out-dir" in err and "--overwrite" in err
    assert files_of(run_dir) == before
    quick = [*REPRO, "--epochs", "1", "--subset", "64"]
    assert train.main([*quick, "--out-dir", str(run_dir), "--overwrite"]) == 0
    assert list(rows_by_epoch(run_dir)) == [1] and (run_dir / "notes.txt").read_text() == "mine"
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    assert json.loads((run_dir / "config.json").read_text())["config"]["epochs"] == 1


def test_resume_with_a_changed_knob_writes_nothing(three_runs, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(three_runs / "a", run_dir)
    before = files_of(run_dir)
    assert train.main(["--resume", str(run_dir), "--lr", "0.5"]) == 2
    err = one_line_error(capsys.readouterr().err, "train.py")
    assert "--lr would change it" in err and "fresh --out-dir" in err
    assert files_of(run_dir) == before
    assert train.main(["--resume", str(run_dir), "--seed", "7", "--quiet"]) == 0  # repeating a knob is fine
    assert summary_of(run_dir) == summary_of(three_runs / "a")


def test_resume_puts_back_the_metrics_line_a_full_disk_lost(three_runs, tmp_path):
    """The checkpoint of the last epoch was written, then the disk filled before its metrics line and the
    summary: each checkpoint carries its epoch's metrics, and --resume puts the line back."""
    run_dir = tmp_path / "run"
    shutil.copytree(three_runs / "a", run_dir)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    (run_dir / "metrics.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    (run_dir / "summary.json").unlink()
    assert train.main(["--resume", str(run_dir), "--quiet"]) == 0
    assert rows_by_epoch(run_dir) == rows_by_epoch(three_runs / "a")
    assert summary_of(run_dir) == summary_of(three_runs / "a")


def test_resume_never_writes_through_a_symbolic_link_in_the_run_directory(three_runs, tmp_path, capsys):
    """Issue 37, class 4: a symbolic link put in place of metrics.jsonl made --resume append the run's
    log to the file it pointed to, outside the run. Now the check before anything runs refuses it in
    one line, and the one opener of appended and reserved files (study.files.open_for_writing) never
    follows a link (the files written whole replace a link rather than writing through it)."""
    from study.files import WriteError, open_for_writing

    run_dir = tmp_path / "run"
    shutil.copytree(three_runs / "a", run_dir)
    outside = tmp_path / "elsewhere.txt"
    outside.write_text("not the run's\n")
    (run_dir / "metrics.jsonl").unlink()
    (run_dir / "metrics.jsonl").symlink_to(outside)
    before = files_of(run_dir)
    assert train.main(["--resume", str(run_dir), "--quiet"]) == 2
    err = one_line_error(capsys.readouterr().err, "train.py")
    assert f"{run_dir / 'metrics.jsonl'} is a symbolic link (to {outside})" in err
    assert outside.read_text() == "not the run's\n" and files_of(run_dir) == before
    for mode in ("a", "wb"):
        with pytest.raises(WriteError, match="is a symbolic link"):
            open_for_writing(run_dir / "metrics.jsonl", mode)
    assert outside.read_text() == "not the run's\n"
    with open_for_writing(tmp_path / "new.log") as out:  # a plain file: created, then appended to
        out.write("one\n")
    with open_for_writing(tmp_path / "new.log") as out:
        out.write("two\n")
    assert (tmp_path / "new.log").read_text() == "one\ntwo\n"

def bare_tensor(path: Path) -> Path:
    torch.save(torch.zeros(3), path)
    return path


@pytest.mark.parametrize("make_args, words", [
    (lambda d: ["--subset", "20000"], "subset=20000 with val_fraction=0.1 needs 20000 + 2222 images, but the "
                                      "dataset has 10000"),
    (lambda d: ["--image-size", "4", "--stem", "imagenet"], "image_size=4 is too small for model=squeezenet"),
    (lambda d: ["--width", "4000"], "GiB for its weights and the synthetic images; this machine has"),
    (lambda d: ["--image-size", "60000", "--width", "0.25"], "GiB for its weights and the synthetic images"),
    (lambda d: ["--finetune-hard-classes", "11", "--finetune-epochs", "1"],
     "finetune_hard_classes=11 but synthetic has 10 classes"),
    (lambda d: ["--init-from", str(bare_tensor(d / "bare.pt"))], "holds a Tensor, not a dict"),
    (lambda d: ["--model", "resnet18", "--width", "1", "--init-from", str(d / "a" / "checkpoint")],
     "does not fit model=resnet18 with 10 classes: weights"),
    (lambda d: ["--config", str(d / "int_keys.yaml")], "every key must be a name, not int 1"),
    (lambda d: ["--config", str(d / "latin1.yaml")], "is not UTF-8 text"),
    (lambda d: ["--config", str(d / "list.json")], "must hold a mapping of key: value, not a list"),
])
def test_train_py_catches_what_the_run_would_fail_on_before_creating_its_directory(
        make_args, words, three_runs, tmp_path, capsys):
    """Checked against the dataset's real sizes, this machine's memory and the model's own weights."""
    shutil.copytree(three_runs / "a", tmp_path / "a")
    (tmp_path / "int_keys.yaml").write_text("dataset: synthetic\n1: 2\n")
    (tmp_path / "latin1.yaml").write_bytes("dataset: synth\xe9tic\n".encode("latin-1"))
    (tmp_path / "list.json").write_text("[1, 2]")
    out = tmp_path / "new"
    code = train.main(["--dataset", "synthetic", "--width", "0.25", "--batch-size", "32", *make_args(tmp_path),
                       "--out-dir", str(out)])
    assert code == 2 and words in one_line_error(capsys.readouterr().err, "train.py")
    assert not out.exists()


def test_an_out_dir_that_is_a_file_is_one_line(tmp_path, capsys):
    for out in (tmp_path / "file", tmp_path / "file" / "below"):
        (tmp_path / "file").write_text("keep")
        assert train.main(["--dataset", "synthetic", "--out-dir", str(out)]) == 2
        assert "a file" in one_line_error(capsys.readouterr().err, "train.py")
        assert (tmp_path / "file").read_text() == "keep"


def write_png(path: Path, size: tuple[int, int] = (8, 8)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 30, 200)).save(path)


def test_image_folders_that_cannot_train_a_classifier_are_one_line(tmp_path, monkeypatch, capsys):
    """One class (it reported 100% test accuracy); an image PIL refuses as a decompression bomb (its
    limit lowered here, so that the refusal is PIL's own on a small file)."""
    from PIL import Image

    one = tmp_path / "one"
    for i in range(10):
        write_png(one / "cat" / f"{i}.png")
    args = ["--epochs", "1", "--width", "0.25", "--out-dir", str(tmp_path / "o")]
    assert train.main(["--dataset", f"imagefolder:{one}", *args]) == 2
    assert "has one class folder (cat); a classifier needs at least two" in one_line_error(
        capsys.readouterr().err, "train.py")
    assert run.main(["--space", "smoke", "--dataset", f"imagefolder:{one}", "--dry-run"]) == 2
    assert "a classifier needs at least two" in one_line_error(capsys.readouterr().err, "run.py")
    two = tmp_path / "two"
    for name in ("cat", "dog"):
        for i in range(5):
            write_png(two / name / f"{i}.png", (64, 64))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64x64 = 4096 > 2 x 1000: PIL raises
    assert train.main(["--dataset", f"imagefolder:{two}", *args]) == 2
    assert "has more pixels than PIL will open" in one_line_error(capsys.readouterr().err, "train.py")
    assert not (tmp_path / "o").exists()


@pytest.fixture
def small_disk(tmp_path):
    with tmpfs(tmp_path / "disk", "24m") as disk:
        yield disk


def test_a_full_disk_stops_train_py_in_one_line_and_resume_finishes_the_same_run(three_runs, small_disk):
    """The disk fills to the brim after epoch 1: one line naming the full disk and --resume, exit 2, no
    partial checkpoint; after freeing space --resume ends with the metrics of the uninterrupted run."""
    run_dir = small_disk / "run"
    process = train_process_after_epoch_1(run_dir)
    fill(small_disk)
    assert process.wait(timeout=120) == 2
    err = one_line_error(process.stderr.read(), "train.py")
    assert "no space left on device" in err and f"continue with: python train.py --resume {run_dir}" in err
    assert not list(run_dir.rglob("*.tmp"))  # no partial checkpoint left
    assert not (run_dir / "summary.json").exists(), "the disk filled too late"
    (small_disk / "filler").unlink()
    assert train.main(["--resume", str(run_dir), "--quiet"]) == 0
    assert rows_by_epoch(run_dir) == rows_by_epoch(three_runs / "a")
    assert summary_of(run_dir) == summary_of(three_runs / "a")


@needs_fashion_mnist()
def test_a_full_disk_while_the_dataset_cache_is_written_is_one_line_and_leaves_no_part_of_it(tmp_path, capsys):
    """Issue 27, class 7: the dataset cache (Fashion-MNIST's, 55 MB) written onto a 30 MB disk. It was a
    RuntimeError traceback from torch's writer; now one line naming the full disk and what to do, exit 2,
    no part of the cache left behind, nothing of the run written."""
    with tmpfs(tmp_path / "disk", "30m") as disk:
        code = train.main(["--dataset", "fashion-mnist", "--data-dir", str(disk), "--epochs", "1",
                           "--out-dir", str(tmp_path / "run"), "--quiet"])
        err = capsys.readouterr().err
        assert code == 2, err
        assert err.startswith(f"train.py: error: cannot write {disk}/fashion-mnist.pt: no space left on device "
                              "(the fashion-mnist dataset cache)") and err.count("\n") == 1, err
        assert list(disk.iterdir()) == []  # no half-written cache, no temporary file
    assert not (tmp_path / "run").exists()


def test_a_full_disk_while_a_cifar_archive_is_downloaded_or_unpacked_leaves_nothing(tmp_path, monkeypatch, capsys):
    """Issue 37, class 6: the disk filled while the archive was unpacked left the archive just fetched
    (holding the space) and said only "[Errno 28]"; while it was downloaded, "cannot download ... put it
    into DIR", as if the network had failed. Now both are one line naming the full disk and what to
    do, exit 2, and the data directory is left as it was."""
    make_cifar_archive(tmp_path, "cifar10", monkeypatch)
    archive = next((tmp_path / "upstream").iterdir())
    with tarfile.open(archive) as tar:
        unpacked = sum(member.size for member in tar.getmembers())
    kib = -(-archive.stat().st_size // 4096) * 4  # the archive on a tmpfs, in whole 4 KiB pages
    assert unpacked > 32 * 1024  # room for the archive and half of what it holds, not for all of it
    removed = ": no space left on device (the archive it had just downloaded removed)"
    for size, words in ((kib // 2, "no space left on device (downloading file://"), (kib + unpacked // 2048, removed)):
        with tmpfs(tmp_path / f"disk{size}", f"{size}k") as disk:
            code = train.main(["--dataset", "cifar10", "--data-dir", str(disk), "--epochs", "1",
                               "--out-dir", str(tmp_path / "run"), "--quiet"])
            err = "".join(line for line in capsys.readouterr().err.splitlines(keepends=True)
                          if not line.startswith("downloading "))
            assert code == 2 and words in one_line_error(err, "train.py"), err
            assert "free space in" in err and list(disk.iterdir()) == []
    assert not (tmp_path / "run").exists()

def test_sigterm_stops_train_py_like_ctrl_c(tmp_path):
    """SIGTERM (what SLURM and Kubernetes send) after epoch 1: exit 143 with the --resume line."""
    run_dir = tmp_path / "run"
    process = train_process_after_epoch_1(run_dir)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 143
    err = "".join(line for line in process.stderr.read().splitlines(keepends=True)
                  if not line.startswith("train.py: warning: "))  # REPRO's 14 steps per epoch
    assert err == (f"train.py: terminated; every finished epoch is kept; continue with: python train.py --resume "
                   f"{run_dir}\n"), err
    assert not list(run_dir.rglob("*.tmp"))


# ------------------------------------------------------------------------------ sweeps, no Ray
@pytest.mark.parametrize("argv, words", [
    (["--name", "../outside"], "--name '../outside' must be a plain directory name"),
    (["--name", "a/b"], "must be a plain directory name"),
    (["--search-seed", "-1"], "--search-seed must be in [0, 2**32 - 1]"),
    (["--search-seed", str(2**32)], "--search-seed must be in [0, 2**32 - 1]"),
    (["--set", "subset=20000"], "subset=20000 with val_fraction=0.5 needs 20000 + 20000 images, but the "
                                "dataset has 10000"),
    (["--set", "image_size=4", "--set", "stem=imagenet"], "image_size=4 is too small"),
    (["--set", "width=4000"], "GiB for its weights and the synthetic images"),
    (["--set", "finetune_hard_classes=11", "--set", "finetune_epochs=1"], "but synthetic has 10 classes"),
    (["--dataset", "cifar100", "--set", "subset=60000"], "the dataset has 50000 training images"),
])
def test_sweep_inputs_every_trial_would_fail_on_are_one_line_before_anything_runs(argv, words, tmp_path, capsys):
    """Each distinct arm against its dataset's real sizes (no download: CIFAR-100 is not on disk here)."""
    out = tmp_path / "runs"
    code = run.main(["--space", "smoke", *argv, "--storage-path", str(out)])
    assert code == 2 and words in one_line_error(capsys.readouterr().err, "run.py")
    assert not out.exists() and not (tmp_path / "outside").exists()


def test_searcher_rejections_are_one_line_before_anything_runs(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    for params, words in (("  lr: {loguniform: [1.0e-3, .inf]}\n", "needs finite [low, high]"),
                          ("  lr: {uniform: [.nan, 0.1]}\n", "needs finite [low, high]")):
        space.write_text(f"search: optuna\nparams:\n  dataset: synthetic\n{params}")
        assert run.main(["--space", str(space), "--storage-path", str(tmp_path / "runs")]) == 2
        assert words in one_line_error(capsys.readouterr().err, "run.py")
    assert not (tmp_path / "runs").exists()


def test_a_dry_run_of_a_million_seeds_checks_each_arm_once(tmp_path, capsys):
    started = time.monotonic()
    assert run.main(["--space", "smoke", "--samples", "1000000", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert time.monotonic() - started < 20 and "2000000 trials" in out and "1000000 seed(s)" in out


def test_a_start_claims_its_directory_atomically(tmp_path):
    """Eight processes claim one experiment directory at the same moment: exactly one gets it; the others
    hear why in one line. A claimed, empty directory is explained to --resume too."""
    import multiprocessing

    experiment = str(tmp_path / "runs" / "same")
    # forkserver: the workers fork from a clean process, not from this one with its training threads
    # (a fork of a process with threads can deadlock: seen once in a full run, two workers stuck)
    with multiprocessing.get_context("forkserver").Pool(8) as pool:
        outcomes = pool.map(try_claim, [experiment] * 8)
    assert outcomes.count("claimed") == 1, outcomes
    assert all("already exists" in o for o in outcomes if o != "claimed"), outcomes
    from sweep.experiment import load_plan

    with pytest.raises(UserError, match="it is empty: if a start claimed it and stopped"):
        load_plan(experiment)


def try_claim(experiment: str) -> str:
    from sweep.experiment import claim

    try:
        claim(experiment)
    except UserError as exc:
        return str(exc)
    return "claimed"


@pytest.mark.parametrize("content", ["", "[]", '{"plan": []}', '{"params": {}}', '{"plan": {"x": 1}, "params": {}}',
                                     b"\xff\xfe"])
def test_resume_of_a_broken_sweep_record_is_one_line(content, tmp_path, capsys):
    experiment = tmp_path / "exp"
    experiment.mkdir()
    path = experiment / "sweep.json"
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    assert run.main(["--resume", str(experiment)]) == 2
    assert "sweep.json" in one_line_error(capsys.readouterr().err, "run.py")


def test_the_report_skips_trials_whose_files_cannot_be_read(tmp_path):
    """Files of another encoding, the wrong top-level type or without the keys the report reads: the
    report is written and lists what it skipped."""
    from analysis.report import main as report_main
    from tests.helpers import write_experiment

    experiment = write_experiment(tmp_path / "exp")
    (experiment / "sweep.json").write_text(json.dumps({"plan": {"search": "grid"}, "expected_trials": "eight"}))
    state = next(experiment.glob("experiment_state-*.json"))
    data = json.loads(state.read_text())
    data["trial_data"].append([json.dumps({"status": "RUNNING"}), "{}"])  # no trial_id: not a trial
    data["trial_data"].append([json.dumps({"trial_id": "bbbbb_00000", "relative_logdir": 5}), "{}"])  # unreadable
    state.write_text(json.dumps(data))
    dirs = sorted(d for d in experiment.iterdir() if d.is_dir())
    (dirs[0] / "result.json").write_bytes(b"\xff\xfe not utf-8\n[1, 2]\n")
    (dirs[1] / "params.json").write_text("[1, 2]")
    (dirs[2] / "error.txt").write_bytes(b"\xff\xfe")
    (dirs[3] / "trial_config.json").write_text('"a string"')
    (dirs[4] / "progress.csv").write_bytes(b"\xff\xfe\x00,,\n1")
    out = tmp_path / "report"
    assert report_main([str(experiment), "--out", str(out)]) == 0  # in this process: a traceback fails the test
    assert ("Skipped (its files could not be read): 'bbbbb_00000' (its trial id or directory 5 in the experiment's files "
            "is not a name inside") in (out / "report.md").read_text()
    (experiment / "sweep.json").write_text("[]")
    for state_content in (b"\xff", b"[]", b'{"trial_data": {"a": 1}}'):
        state.write_bytes(state_content)
        assert report_main([str(experiment), "--out", str(out)]) == 0


def test_the_driver_record_restores_results_a_full_disk_cut_from_rays_files(tmp_path):
    """Ray's result.json of a finished trial left at 0 bytes (as a full disk left it) and no progress.csv:
    the rows come from the driver's own record, trial_records/<trial_id>.json (sweep/storage.py)."""
    from study.layout import RECORDS_DIR
    from study.load import load
    from tests.helpers import TRIALS, trial_dir_name, write_experiment

    experiment = write_experiment(tmp_path / "exp")
    trial_dir = experiment / trial_dir_name("aaaaa_00000", "none")
    (trial_dir / "result.json").write_bytes(b"")
    (trial_dir / "progress.csv").unlink(missing_ok=True)
    (experiment / RECORDS_DIR).mkdir()
    (experiment / RECORDS_DIR / "aaaaa_00000.json").write_text(
        json.dumps({"trial_id": "aaaaa_00000", "rows": TRIALS["aaaaa_00000"][2]}))
    loaded = load(experiment)
    assert loaded.epochs[loaded.epochs["trial_id"] == "aaaaa_00000"]["epoch"].tolist() == [1, 2]
    assert loaded.trials.set_index("trial_id").loc["aaaaa_00000", "stop_reason"] == "finished"


def test_a_reader_that_leaves_early_is_not_a_traceback():
    """`run.py --dry-run | head -2`: the writer of a closed pipe exits 141, as shell tools do, silently."""
    process = subprocess.Popen([sys.executable, "sweep/run.py", "--space", "ablation", "--dry-run"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # the reader leaves before the first line (imports take the CLI seconds)
    assert process.wait(timeout=60) == 141
    assert process.stderr.read() == b""


def test_the_advice_after_a_stop_resumes_only_a_run_with_a_checkpoint(tmp_path):
    """Stopped before its first epoch ended (config.json, no checkpoint yet): start again, not --resume."""
    assert "start again" in train.after_stop(tmp_path) and "--resume" not in train.after_stop(tmp_path)
    (tmp_path / "checkpoint").mkdir()
    assert train.after_stop(tmp_path).endswith(f"continue with: python train.py --resume {tmp_path}")


# ------------------------------------------------------------------- files of the wrong shape
def damaged_copy(tmp: Path, sweep_part=None, column=None) -> Path:
    """A copy of the committed real ablation's frames (results/ablation) with one part of sweep.json
    ((keys..., value)) or one cell of a frame ((file, column, value)) of the wrong type."""
    import pandas as pd

    copy = tmp / "damaged"
    shutil.copytree(Path(__file__).resolve().parent.parent / "results" / "ablation", copy)
    if sweep_part:
        *keys, value = sweep_part
        data = json.loads((copy / "sweep.json").read_text())
        inner = data
        for key in keys[:-1]:
            inner = inner[key]
        inner[keys[-1]] = value
        (copy / "sweep.json").write_text(json.dumps(data))
    if column:
        name, key, value = column
        frame = pd.read_csv(copy / name)
        frame[key] = frame[key].astype(object)
        frame.loc[frame.index[0], key] = value
        frame.to_csv(copy / name, index=False)
    return copy


@pytest.mark.parametrize("part", [("plan", "objectives", 5), ("design", "x"), ("params", [1, 2]),
                                  ("phases", "screen", "rungs", 0, "budget", "3"), ("phases", "confirm", "arms", "x"),
                                  ("expected_trials", "48")])
def test_a_sweep_record_of_the_wrong_shape_is_read_without_it(part, tmp_path, capsys):
    """Before: TypeError / AttributeError tracebacks (objectives an int, design a string; params a
    list made the report detect `epochs` as a factor of the halving screen). Now the part is left out
    by the record's one reader (study.layout.checked_parts) and the report is written."""
    from analysis import report

    copy = damaged_copy(tmp_path, sweep_part=part)
    assert report.main([str(copy), "--out", str(tmp_path / "out")]) == 0, capsys.readouterr().err
    assert "Traceback" not in capsys.readouterr().err and (tmp_path / "out" / "report.md").is_file()


@pytest.mark.parametrize("column", [("trials.csv", "test_acc", "abc"), ("trials.csv", "val_images", "x"),
                                    ("trials.csv", "rung", "r"), ("epochs.csv", "epoch", "e"),
                                    ("epochs.csv", "val_acc", "v"), ("trials.csv", "stop_reason", "weird")])
def test_a_frame_with_text_in_a_number_s_column_is_one_line_naming_file_and_column(column, tmp_path, capsys):
    """Before: ValueError / TypeError / KeyError tracebacks deep in the analysis; now the frames'
    reader (study.load.check_frames) says which file and column, exit 2."""
    from analysis import report

    copy = damaged_copy(tmp_path, column=column)
    assert report.main([str(copy), "--out", str(tmp_path / "out")]) == 2
    line = one_line_error(capsys.readouterr().err, "report")
    assert f"{column[0]}: column {column[1]} holds {column[2]!r}" in line


@pytest.mark.parametrize("key, value, said", [("max_t", "x", "plan.max_t is 'x', not a whole number"),
                                              ("cpus_per_trial", "one", "plan.cpus_per_trial is 'one', not a number"),
                                              ("gpus_per_trial", float("inf"), "plan.gpus_per_trial is inf, not a number"),
                                              ("points", 5, "plan.points is 5, not a list or null"),
                                              ("scheduler", "nope", "plan.scheduler is 'nope', not one of halving"),
                                              ("smoke", "yes", "plan.smoke is 'yes', not true or false")])
def test_resume_of_a_plan_with_a_field_of_the_wrong_type_is_one_line(key, value, said, tmp_path, capsys):
    """Issue 27, class 3: before, `--resume` met a string where the driver compared a number (a
    TypeError traceback for the CPUs and GPUs per trial); the plan's reader (Plan.from_record) checks
    every field against the type it is declared with."""
    from sweep.planning.plan import Plan

    experiment = tmp_path / "exp"
    experiment.mkdir()
    plan = Plan(str(experiment), "grid", "fifo", 1, 2, 1, 3.0, 1.0, 0.0, None, 0, 0, phase_dir="screen")
    recorded = {**dataclasses.asdict(plan), key: value}
    (experiment / "sweep.json").write_text(json.dumps({"plan": recorded, "params": {},
                                                      "phases": {"screen": {"dir": "screen"}}}))
    assert run.main(["--resume", str(experiment)]) == 2
    assert said in one_line_error(capsys.readouterr().err, "run.py")


@pytest.mark.parametrize("axis, said", [({"loguniform": [1]}, "params.attention: loguniform needs a float field"),
                                         ({"bogus": 1}, "params.attention: expected a value or one of {grid"),
                                         ({"grid": "none"}, "params.attention: grid needs a non-empty list"),
                                         ({"grid": [[1]]}, "params.attention: attention=[1] has the wrong type")])
def test_resume_of_a_malformed_search_axis_is_one_line(axis, said, tmp_path, capsys):
    """Issue 27, class 3: a search axis in sweep.json's params that no space file could hold (a TypeError
    inside Ray Tune's loguniform, a KeyError for an unknown kind) is checked as a space file's axis is."""
    from sweep.planning.plan import Plan

    experiment = tmp_path / "exp"
    experiment.mkdir()
    plan = Plan(str(experiment), "grid", "fifo", 1, 2, 1, 3.0, 1.0, 0.0, None, 0, 0, phase_dir="screen")
    (experiment / "sweep.json").write_text(json.dumps({"plan": dataclasses.asdict(plan), "params": {
        "dataset": "synthetic", "attention": axis}, "phases": {"screen": {"dir": "screen"}}}))
    assert run.main(["--resume", str(experiment)]) == 2
    assert f"{experiment}/sweep.json: {said}" in one_line_error(capsys.readouterr().err, "run.py")


def test_a_trial_whose_results_hold_text_for_a_number_is_skipped_and_named(tmp_path):
    """Issue 27, class 3: a result.json whose metric is text or a list (a ValueError traceback from
    pandas in the report and the export); the trial is left out and named, the others analysed."""
    from analysis import report
    from study.load import load
    from tests.helpers import TRIALS, trial_dir_name, write_experiment

    experiment = write_experiment(tmp_path / "exp")
    status, attention, results, _ = TRIALS["aaaaa_00000"]
    damaged = experiment / trial_dir_name("aaaaa_00000", attention) / "result.json"
    lines = damaged.read_text().splitlines()
    last = json.loads(lines[-1])
    last["test_acc"] = "abc"
    damaged.write_text("\n".join([*lines[:-1], json.dumps(last)]) + "\n")
    exp = load(experiment)
    assert "aaaaa_00000" not in set(exp.trials["trial_id"]) and len(exp.trials) == len(TRIALS)  # 6 - 1 + the stale one
    assert any("aaaaa_00000 (trial_config.json or result.json: test_acc holds 'abc', not a number)" in s
               for s in exp.skipped), exp.skipped
    assert report.main([str(experiment), "--out", str(tmp_path / "out")]) == 0


@pytest.mark.parametrize("how, said", [("another user's", "is owned by uid 4242, not by you"),
                                       ("world-writable file", "is writable by every user (mode 666)"),
                                       ("world-writable search state", "is writable by every user (mode 666)"),
                                       ("linked phase", "is a symbolic link"),
                                       ("world-writable directory", "is writable by every user (mode 777)"),
                                       ("symbolic link", "is a symbolic link")])
@pytest.mark.parametrize("flag", ["--resume", "--confirm"])
def test_restoring_ray_s_pickles_is_refused_unless_they_are_the_user_s_own(how, said, flag, tmp_path, capsys):
    """Issue 27, class 9: --resume and --confirm restore Ray Tune's state, which unpickles tuner.pkl (a
    pickle runs whatever it names). Refused, before anything is unpickled, when a pickle (or the
    directory holding it) is another user's, writable by every user, or a symbolic link."""
    import os

    from sweep.planning.plan import Plan

    if how == "another user's" and os.getuid() != 0:
        pytest.skip("giving a file to another user needs root")
    experiment = tmp_path / "exp"
    (experiment / "screen").mkdir(parents=True)
    plan = Plan(str(experiment), "grid", "fifo", 1, 2, 1, 3.0, 1.0, 0.0, None, 0, 0, phase_dir="screen")
    (experiment / "sweep.json").write_text(json.dumps({"plan": dataclasses.asdict(plan), "params": {
        "dataset": "synthetic"}, "phases": {"screen": {"dir": "screen"}}}))
    marker = tmp_path / "code-ran"
    pickled = experiment / "screen" / "tuner.pkl"
    if how == "symbolic link":
        (tmp_path / "elsewhere.pkl").write_bytes(pickle.dumps(RunsCode(marker)))
        pickled.symlink_to(tmp_path / "elsewhere.pkl")
    else:
        pickled.write_bytes(pickle.dumps(RunsCode(marker)))
    if how == "world-writable search state":  # Ray cloudpickles the search algorithm's state into a .json
        searcher = experiment / "screen" / "basic-variant-state-2026-01-01_00-00-00.json"
        searcher.write_bytes(pickle.dumps(RunsCode(marker)))
        searcher.chmod(0o666)
    if how == "linked phase":
        (experiment / "screen").rename(tmp_path / "real-screen")
        (experiment / "screen").symlink_to(tmp_path / "real-screen", target_is_directory=True)
    if how == "another user's":
        os.chown(pickled, 4242, 4242)
    elif how == "world-writable file":
        pickled.chmod(0o666)
    elif how == "world-writable directory":
        (experiment / "screen").chmod(0o777)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert run.main([flag, str(experiment)]) == 2
    err = one_line_error(capsys.readouterr().err, "run.py")
    assert err.startswith(f"run.py: error: refusing to restore {experiment}: ") and said in err, err
    assert "a pickle can run any code" in err
    assert not marker.exists() and sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


STATE = "2026-01-01_00-00-00"
SIGNED_FILES = ["tuner.pkl", f"basic-variant-state-{STATE}.json", f"searcher-state-{STATE}.pkl",
                f"experiment_state-{STATE}.json", f"experiment_state-{STATE}.json.good", "train_trial_x/error.pkl"]


def copied_experiment(tmp_path: Path, marker: Path) -> Path:
    """An experiment as a colleague's copy would arrive: the user's own files, mode 644, holding a trial
    state, and in each file restoring unpickles a pickle that runs code (in the experiment state, inside
    a trial's JSON as Ray's CLOUDPICKLE_FALLBACK, so the file is whole JSON)."""
    from sweep.planning.plan import Plan

    experiment = tmp_path / "exp"
    (experiment / "screen" / "train_trial_x").mkdir(parents=True)
    plan = Plan(str(experiment), "grid", "fifo", 1, 2, 1, 3.0, 1.0, 0.0, None, 0, 0, phase_dir="screen")
    (experiment / "sweep.json").write_text(json.dumps({"plan": dataclasses.asdict(plan), "params": {
        "dataset": "synthetic"}, "phases": {"screen": {"dir": "screen"}}}))
    payload = pickle.dumps(RunsCode(marker))
    trial = json.dumps({"config": {"_type": "CLOUDPICKLE_FALLBACK", "value": payload.hex()}})
    state = json.dumps({"trial_data": [[trial, "{}"]], "runner_data": {}, "stats": {}})
    for name in SIGNED_FILES:
        (experiment / "screen" / name).write_bytes(state.encode() if "experiment_state" in name else payload)
    return experiment


@pytest.mark.parametrize("changed", SIGNED_FILES)
@pytest.mark.parametrize("flag", ["--resume", "--confirm"])
def test_a_copied_or_changed_experiment_is_not_restored_until_the_user_trusts_it(changed, flag, tmp_path, capsys,
                                                                                 monkeypatch):
    """Issue 37, class 1: an experiment copied from a colleague, a shared disk or an archive is the
    user's own by owner and mode, and a pickle in it ran its code on --resume / --confirm (a marker file
    was made through tuner.pkl and through the trial state). Now every file restoring unpickles must
    carry a signature of this user's key (sweep.trust): a copy signed with another key is refused, and
    so is one of the user's own experiments whose file `changed` after it was signed; both in one line,
    nothing written, no code run; `--trust DIR` signs it deliberately."""
    from sweep import trust

    marker = tmp_path / "code-ran"
    experiment = copied_experiment(tmp_path, marker)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "colleague"))
    assert trust.trust(str(experiment)) == len(SIGNED_FILES)  # signed where it was made, with another key
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "mine"))
    trust.signing_key()  # this user's key exists already: the refusal is about the files

    def refused(path: Path) -> None:
        before = {p.relative_to(tmp_path): p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")}
        assert run.main([flag, str(experiment)]) == 2
        err = one_line_error(capsys.readouterr().err, "run.py")
        assert err.startswith(f"run.py: error: refusing to restore {experiment}: {path}") and (
            "is not signed by a sweep of yours" in err and "a pickle can run any code" in err
            and f"python sweep/run.py --trust {experiment}" in err), err
        after = {p.relative_to(tmp_path): p.read_bytes() if p.is_file() else None for p in tmp_path.rglob("*")}
        assert not marker.exists() and after == before

    refused(experiment / "screen" / f"basic-variant-state-{STATE}.json")  # the first of the colleague's files
    assert run.main(["--trust", str(experiment)]) == 0
    assert "signed 6 files of" in capsys.readouterr().out and trust.unsigned(str(experiment)) == []
    path = experiment / "screen" / changed
    path.write_bytes(path.read_bytes() + b"\n")  # changed since it was signed (whole JSON, the same pickle)
    refused(path)
    assert not marker.exists()


def test_trust_refuses_what_it_cannot_sign_as_yours(tmp_path, capsys):
    """--trust of what is not an experiment, and of one holding a link or a world-writable pickle: one
    line, nothing signed."""
    from sweep import trust

    marker = tmp_path / "code-ran"
    assert run.main(["--trust", str(tmp_path / "nowhere")]) == 2
    assert "is not an experiment directory" in one_line_error(capsys.readouterr().err, "run.py")
    experiment = copied_experiment(tmp_path, marker)
    (experiment / "screen" / "tuner.pkl").chmod(0o666)
    assert run.main(["--trust", str(experiment)]) == 2
    assert "is writable by every user (mode 666)" in one_line_error(capsys.readouterr().err, "run.py")
    assert not (experiment / "screen" / trust.SIGNATURES).exists() and not marker.exists()


@pytest.mark.parametrize("damage, words", [
    ("a file where the config directory goes", "cannot make the key that signs your experiments"),
    ("a key cut short", "is not a signing key (5 bytes, 32 expected): remove it"),
])
def test_a_key_that_cannot_be_made_or_read_is_one_line_before_anything_is_written(damage, words, tmp_path, capsys,
                                                                                     monkeypatch):
    """The signing key (sweep.trust) of a start or a --trust: a config directory it cannot be made in,
    or a key file that is not one, is one line, exit 2; the experiment directory is not made."""
    from sweep import trust

    config = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    trust._key_at.cache_clear()
    if damage.startswith("a file"):
        config.write_text("not a directory")
    else:
        trust.key_file().parent.mkdir(parents=True)
        trust.key_file().write_bytes(b"short")
    out = tmp_path / "runs"
    assert run.main(["--space", "smoke", "--storage-path", str(out), "--name", "k", "--address", "local"]) == 2
    assert words in one_line_error(capsys.readouterr().err, "run.py") and not out.exists()
    experiment = copied_experiment(tmp_path, tmp_path / "code-ran")
    assert run.main(["--trust", str(experiment)]) == 2
    assert words in one_line_error(capsys.readouterr().err, "run.py")
    assert not (experiment / "screen" / trust.SIGNATURES).exists()


# ------------------------------------------------------------ where output goes
def test_the_report_refuses_an_out_that_is_a_file_or_an_experiment_s_own_directory(tmp_path, capsys):
    """Before: `[Errno 17] File exists` for a file, and `--out EXPERIMENT` wrote the report's
    sweep.json (only its well-formed parts), trials.csv and epochs.csv over the experiment's record."""
    from analysis import report

    frames = Path(__file__).resolve().parent.parent / "results" / "stages"
    (tmp_path / "a-file").write_text("x")
    experiment = tmp_path / "experiment"
    (experiment / "screen").mkdir(parents=True)
    record_text = (frames / "sweep.json").read_text()
    (experiment / "sweep.json").write_text(record_text)
    (experiment / "screen" / "experiment_state-2026-01-01_00-00-00.json").write_text("{}")
    for out, said in ((tmp_path / "a-file", "is a file, not a directory"),
                      (experiment, "is an experiment's directory"), (experiment / "screen", "is an experiment's directory")):
        assert report.main([str(frames), "--out", str(out)]) == 2
        assert said in one_line_error(capsys.readouterr().err, "report")
    assert (experiment / "sweep.json").read_text() == record_text and not (experiment / "trials.csv").exists()
    copy = tmp_path / "frames"  # a report's own directory may be written again (results/ is regenerated so)
    shutil.copytree(frames, copy)
    assert report.main([str(copy), "--out", str(copy)]) == 0


def test_paths_in_an_experiment_s_files_never_lead_out_of_it(tmp_path, capsys):
    """Issue 27, class 4: a trial id or trial directory holding `..` in Ray's experiment state, a trial
    directory that is a symbolic link out of the experiment, a frames file whose trial id or trial_dir
    leads out: the trial is not read (the report names it as skipped) or the file is refused in one line;
    nothing outside is read or written."""
    from analysis import report
    from study.load import load
    from tests.helpers import trial_dir_name, write_experiment

    outside = tmp_path / "outside"
    outside.mkdir()
    experiment = write_experiment(tmp_path / "exp", stale_extra=False)
    state = experiment / "experiment_state-2026-01-01_00-00-00.json"
    entries = json.loads(state.read_text())["trial_data"]
    escaped = json.loads(entries[0][0])
    escaped.update(trial_id="../../outside/x", relative_logdir=f"../outside/{escaped['relative_logdir']}")
    entries[0][0] = json.dumps(escaped)
    linked = json.loads(entries[1][0])  # its directory replaced by a link to a copy outside
    shutil.move(experiment / linked["relative_logdir"], outside / "copy")
    (experiment / linked["relative_logdir"]).symlink_to(outside / "copy", target_is_directory=True)
    looped = json.loads(entries[2][0])  # its directory a loop of symbolic links: not a traceback
    shutil.rmtree(experiment / looped["relative_logdir"])
    (experiment / looped["relative_logdir"]).symlink_to(experiment / "loop")
    (experiment / "loop").symlink_to(experiment / looped["relative_logdir"])
    state.write_text(json.dumps({"trial_data": entries}))
    (outside / trial_dir_name("aaaaa_00000", "none")).mkdir()  # where the escaped entry points
    exp = load(experiment)
    assert not {"aaaaa_00001", "aaaaa_00002", "../../outside/x"} & set(exp.trials["trial_id"])
    assert len(exp.skipped) == 3 and all("is not a name inside" in s for s in exp.skipped), exp.skipped
    assert report.main([str(experiment)]) == 0
    text = (experiment / "report" / "report.md").read_text()
    assert text.count("Skipped (its files could not be read): ") == 3 and "is not a name inside" in text
    before = sorted(p.relative_to(outside) for p in outside.rglob("*"))
    # frames (a report's directory) whose trial id or trial_dir leads out: one line each
    frames = experiment / "report"
    trials_csv = (frames / "trials.csv").read_text()
    for column, value in (("trial_id", "../../outside"), ("trial_dir", "../outside/x")):
        frame = pd.read_csv(io.StringIO(trials_csv))
        frame[column] = frame[column].astype(object)
        frame.loc[0, column] = value
        frame.to_csv(frames / "trials.csv", index=False)
        assert report.main([str(frames), "--out", str(tmp_path / "again")]) == 2
        err = one_line_error(capsys.readouterr().err, "report")
        assert f"column {column} holds {value!r}, which leads out of the experiment's directory" in err, err
    assert sorted(p.relative_to(outside) for p in outside.rglob("*")) == before


def test_the_report_replaces_a_symbolic_link_in_its_directory_and_refuses_another_experiment_s(tmp_path, capsys):
    """Issue 27, class 4: a symbolic link inside the report's directory (report.md -> a file elsewhere)
    was written through; RUN_DIR/report a link out of the experiment; --out inside another experiment
    (its own report would be overwritten) or inside a trial's directory."""
    from analysis import report
    from tests.helpers import write_experiment

    experiment = write_experiment(tmp_path / "exp")
    other = write_experiment(tmp_path / "other")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").symlink_to(victim)
    (out / "trials.csv").symlink_to(victim)
    assert report.main([str(experiment), "--out", str(out)]) == 0
    assert victim.read_text() == "keep me"
    assert not (out / "report.md").is_symlink() and (out / "report.md").read_text().startswith("# Sweep report")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (experiment / "report").symlink_to(elsewhere, target_is_directory=True)
    assert report.main([str(experiment)]) == 2
    assert "is a symbolic link to" in one_line_error(capsys.readouterr().err, "report")
    assert list(elsewhere.iterdir()) == []
    # a report of a report's frames, or of a phase, inside its own experiment: written where asked
    assert report.main([str(experiment / "report2"), "--out", str(experiment / "report2")]) == 2  # none yet
    capsys.readouterr()
    assert report.main([str(experiment), "--out", str(experiment / "report2")]) == 0
    for target in (experiment / "report2", experiment / "report3"):
        assert report.main([str(experiment / "report2"), "--out", str(target)]) == 0, capsys.readouterr().err
    trial_dir = next(p for p in other.iterdir() if (p / "params.json").is_file())
    for target, said in ((other / "report", f"is inside another experiment, {other}"),
                         (other / "report" / "deeper", f"is inside another experiment, {other}"),
                         (trial_dir / "report", "is inside the trial directory")):
        assert report.main([str(experiment), "--out", str(target)]) == 2
        assert said in one_line_error(capsys.readouterr().err, "report")
    assert not (other / "report").exists() and not (trial_dir / "report").exists()
    # issue 37, class 10: a params.json in a directory above --out that is no trial's refused every report
    stray = tmp_path / "notes"
    (stray / "deeper").mkdir(parents=True)
    (stray / "params.json").write_text("{}")
    assert report.main([str(experiment), "--out", str(stray / "deeper" / "out")]) == 0, capsys.readouterr().err
