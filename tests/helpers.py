"""Helpers that several test modules share (test modules never import each other; shared fixtures are
in conftest.py): the Fashion-MNIST location, run.py's plan without running it, a tiny trial, small
CIFAR archives in the official layout, a hand-built experiment directory in Ray Tune 2.60's layout,
a small real disk to fill, and analysis/trials.ipynb executed and compared with the report."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import pickle
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest

from training import download, sources
from training.download import md5sum

# Fashion-MNIST on this machine: Debian's dataset-fashion-mnist (what CI installs) or the default
# cache's download (what make test fetches: scripts/test_data.py); None without either.
FASHION_MNIST = sources.fashion_mnist_copy()
NO_FASHION_MNIST = "no Fashion-MNIST here: make test fetches it; or apt-get install dataset-fashion-mnist"
CIFAR10_TRAIN, CIFAR10_TEST = 5 * 4, 3  # images in the tests' small CIFAR-10 archives


def needs_fashion_mnist():
    return pytest.mark.skipif(FASHION_MNIST is None, reason=NO_FASHION_MNIST)


def plan(argv: list[str]):
    """(params, Plan, record) of a run.py command line, without running anything."""
    from sweep import run

    return run.plan_sweep(run.build_parser().parse_args(argv))[:3]


# ---------------------------------------------------------------------------------- a tiny trial
# A trial of a few seconds on two CPU cores (test_loop.py, test_checkpoint.py).
TINY = dict(dataset="synthetic", subset=1024, batch_size=32, eval_batch_size=256, width=0.25,
            epochs=3, lr=0.05, measure_latency=False, device="cpu")


def collect():
    rows = []
    return rows, lambda metrics, path: rows.append(dict(metrics))


# ---------------------------------------------------------------------------------- CIFAR archives
# ---------------------------------------------------------------------------------- helpers
def cifar_batch(n: int, label_key: str, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), label_key: rng.integers(0, 10, n).tolist()}

def write_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path

def make_cifar_archive(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A small archive in the official layout; the spec is patched to fetch it from a file:// URL."""
    spec = sources.CIFAR_SPECS[name]
    label_key = spec.label_key
    if name == "cifar10":
        batches = {f: cifar_batch(4, label_key, i) for i, f in enumerate(spec.train_files)}
        batches["test_batch"] = cifar_batch(CIFAR10_TEST, label_key, 99)
    else:
        batches = {"train": cifar_batch(6, label_key, 1), "test": cifar_batch(2, label_key, 2)}
    batches[spec.train_files[0]]["data"][0] = np.repeat([10, 20, 30], 1024)  # R, G, B planes
    names = [f"class{i}" for i in range(10)]
    # Protocol 2 and numpy.core, as the official Python 2 pickles are written.
    files = {f"{spec.folder}/{f}": pickle.dumps(b, protocol=2).replace(b"numpy._core.", b"numpy.core.")
             for f, b in batches.items()}
    files[f"{spec.folder}/{spec.meta_file}"] = pickle.dumps({spec.names_key: names}, protocol=2)
    (tmp_path / "upstream").mkdir()
    archive = write_tar(tmp_path / "upstream" / spec.filename, files)
    monkeypatch.setitem(sources.CIFAR_SPECS, name,
                        dataclasses.replace(spec, url=archive.as_uri(), md5=md5sum(archive)))
    return batches

class CountingUrlopen:
    """Wraps urlopen to count fetches."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail: Exception | None = None) -> None:
        self.calls, self.fail, self.real = 0, fail, download.urlopen
        monkeypatch.setattr(download, "urlopen", self)

    def __call__(self, url: str, timeout: float):
        self.calls += 1
        if self.fail:
            raise self.fail
        return self.real(url, timeout=timeout)


# ---------------------------------------------------------------------------------- an experiment
def epoch(n, val, final=None):
    row = {"epoch": n, "train_phase": "main", "lr": 0.1, "train_loss": 2.0 / n, "train_acc": val, "val_loss": 1.0 / n,
           "val_acc": val, "best_val_acc": val, "best_epoch": n, "images_per_sec": 100.0, "epoch_time_s": 1.0,
           "elapsed_s": float(n), "status": "running", "done": False, "params": 1000, "flops": 2e6,
           "size_mb": 0.1, "training_iteration": n, "time_total_s": float(n)}
    if final:  # our final report; Ray sets done=True on the last result of every trial it ends
        row.update(status=final, epochs_run=n, final_val_acc=val, test_acc=val - 1, test_loss=0.5,
                   precision="fp32", wall_time_s=float(n), **{"test_acc_class/cat": 50.0})
    return row

TRIALS = {  # trial_id: (Ray status, attention, results, error)
    "aaaaa_00000": ("TERMINATED", "none", [epoch(1, 50), epoch(2, 60, "finished")], None),
    "aaaaa_00001": ("TERMINATED", "channel", [epoch(1, 40)], None),
    "aaaaa_00002": ("ERROR", "cbam", [], "Traceback...\nRuntimeError: CUDA out of memory"),
    "aaaaa_00003": ("RUNNING", "eca", [epoch(1, 45)], None),
    "aaaaa_00004": ("PENDING", "simple", None, None),
    "aaaaa_00005": ("TERMINATED", "none", [epoch(1, 30, "diverged")], None),
}

def trial_dir_name(trial_id, attention):
    return f"train_trial_{trial_id}_{int(trial_id[-1])}_attention={attention}_2026-01-01_00-00-00"

def write_experiment(path: Path, stale_extra: bool = True) -> Path:
    """Ray's files as Ray 2.60 writes them (see NOTES.md), for the trials above."""
    path.mkdir(parents=True)
    entries = []
    for trial_id, (status, attention, results, error) in TRIALS.items():
        config = {"attention": attention, "seed": 0, "dataset": "synthetic"}
        name = trial_dir_name(trial_id, attention)
        entries.append([json.dumps({"trial_id": trial_id, "status": status, "config": config,
                                    "relative_logdir": name}), json.dumps({"num_failures": 0})])
        (path / name).mkdir()
        if results is None:
            continue  # a pending trial's directory is empty
        (path / name / "params.json").write_text(json.dumps(config))
        lines = [json.dumps({**r, "done": i == len(results) - 1, "trial_id": trial_id, "config": config})
                 for i, r in enumerate(results)]
        if status == "RUNNING":
            lines.append('{"epoch": 2, "val_a')  # cut short by a killed process
        (path / name / "result.json").write_text("\n".join(lines) + "\n")
        if error:
            (path / name / "error.txt").write_text(error)
    (path / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps({"trial_data": entries}))
    (path / "sweep.json").write_text(json.dumps({"space_name": "toy", "expected_trials": 8}))
    if stale_extra:  # started after the state was last saved: only its directory knows it
        name = trial_dir_name("aaaaa_00006", "none")
        (path / name).mkdir()
        (path / name / "params.json").write_text(json.dumps({"attention": "none", "seed": 1}))
        (path / name / "result.json").write_text(json.dumps(epoch(1, 20)) + "\n")
    return path


def image_folder(root: Path, per_class: int = 6, size: int = 32) -> Path:
    """root/cat and root/dog, `per_class` PNGs each (grey levels that differ by class: learnable)."""
    import numpy as np
    from PIL import Image

    for k, label in enumerate(("cat", "dog")):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((size, size, 3), 20 * (i % 6) + 120 * k, np.uint8)).save(root / label / f"{i}.png")
    return root


# ---------------------------------------------------------------------------------- a small disk
@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A tmpfs of `size` mounted at `path` (root only: else the test is skipped), unmounted after."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip() or 'not root'})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)

def fill(disk: Path) -> None:
    """Write zeros into `disk` until the device is full to the brim (ENOSPC)."""
    with (disk / "filler").open("wb") as out:
        with pytest.raises(OSError, match="No space left"):
            while True:
                out.write(bytes(1 << 20))
                out.flush()


# ---------------------------------------------------------------------------------- the notebook
ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "analysis" / "trials.ipynb"
# Appended to the notebook: what its report cell built, for the test to compare with the report's.
SHOWN_CELL = """import pickle
with open({out!r}, "wb") as f:
    pickle.dump({{"module": report.__file__, "margin": MARGIN, "sections": [
        (s.title, s.text, s.name, s.table, s.figure is not None) for s in SECTIONS]}}, f)"""


def execute_notebook(out: Path, run_dir: Path | None = None, edits: dict[str, str] | None = None):
    """(the executed notebook, what its report cell built: {"module", "margin", "sections"}) of
    analysis/trials.ipynb run by nbclient as Jupyter runs it (in analysis/, its kernel importing this
    checkout), on `run_dir` given as ABLATION_RUN_DIR, or with `edits` (old: new) made to its first code
    cell instead; a cell appended pickles its sections to `out`."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") and not c.get("execution_count") for c in notebook.cells
               if c.cell_type == "code")  # committed without outputs
    first = next(c for c in notebook.cells if c.cell_type == "code")
    for old, new in (edits or {}).items():
        assert old in first.source, f"the notebook's first code cell has no {old!r}"
        first.source = first.source.replace(old, new)
    notebook.cells.append(nbformat.v4.new_code_cell(SHOWN_CELL.format(out=str(out))))
    env = {k: v for k, v in os.environ.items() if k != "ABLATION_RUN_DIR"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    if run_dir is not None:
        env["ABLATION_RUN_DIR"] = str(run_dir)
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "analysis")}}).execute(env=env)
    return notebook, pickle.loads(out.read_bytes())


def assert_notebook_is_the_report(notebook, shown: dict, expected: list) -> None:
    """The notebook's sections are `expected` (analysis.report.sections of the same experiment and
    margin), title, text and table frame for frame; its report cell displays each table as the
    report prints it and each figure, in order; no cell failed."""
    from pandas.testing import assert_frame_equal

    from analysis.render import to_markdown

    assert Path(shown["module"]).resolve().is_relative_to(ROOT)  # this checkout's analysis, not an installed one
    assert [s[:3] for s in shown["sections"]] == [(s.title, s.text, s.name) for s in expected]
    for (title, _, _, table, figure), section in zip(shown["sections"], expected):
        assert figure == (section.figure is not None), title
        assert (table is None) == (section.table is None), title
        if table is not None:
            assert_frame_equal(table, section.table, obj=title)
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    cell = next(c for c in notebook.cells if c.get("id") == "report")
    markdown = [o.data["text/markdown"] for o in cell.outputs if "text/markdown" in o.get("data", {})]
    tables = [to_markdown(s.table) for s in expected if s.table is not None]
    assert [m for m in markdown if m in tables] == tables  # every table, in the report's order
    assert sum("image/png" in o.get("data", {}) for o in cell.outputs) == sum(s.figure is not None for s in expected)


@contextlib.contextmanager
def other_process_spinning(tmp_path: Path):
    """A process spinning on one CPU that is not a descendant of this one (study.busy counts a
    process's descendants as its own): started through `setsid -f`, so init adopts it; killed after."""
    import signal
    import sys
    import time

    pid_file = tmp_path / "spinner.pid"
    subprocess.run(["setsid", "-f", sys.executable, "-c",
                    f"import os; open({str(pid_file)!r}, 'w').write(str(os.getpid()))\nwhile True: pass"], check=True)
    deadline = time.monotonic() + 10
    while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = int(pid_file.read_text())
    try:
        time.sleep(0.3)
        yield pid
    finally:
        os.kill(pid, signal.SIGKILL)
