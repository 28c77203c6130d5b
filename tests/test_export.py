"""deploy.export on real runs: a SqueezeNet that learned on real Fashion-MNIST (conftest's shared run)
exported to ONNX (checked against PyTorch) and int8 (within 2 points of fp32), with the table; bad
input is one line, exit 2."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deploy import export
from deploy.onnx_export import ATOL
from study.busy import BUSY_SHARE

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_a_model_that_learned_exports_verified_with_its_measured_table(fashion_mnist_run, tmp_path, capsys):
    out = tmp_path / "exported"
    assert export.main([str(fashion_mnist_run), "--out", str(out), "--repeats", "5", "--calibration", "128"]) == 0
    files = out / fashion_mnist_run.name
    record = json.loads((files / "export.json").read_text())
    rows = {row["format"]: row for row in record["rows"]}
    assert set(rows) == {"PyTorch fp32", "ONNX fp32", "ONNX int8 (QDQ)"}
    reported = json.loads((fashion_mnist_run / "summary.json").read_text())["test_acc"]
    # The best-validation weights, as the run reported them, on the whole test set.
    assert record["reported_test_acc"] == reported and record["test_images"] == 10_000
    assert abs(rows["PyTorch fp32"]["test_acc"] - reported) <= 0.05
    assert abs(rows["ONNX fp32"]["test_acc"] - rows["PyTorch fp32"]["test_acc"]) <= 0.05
    assert rows["ONNX fp32"]["test_acc"] >= 75.0
    assert abs(rows["ONNX int8 (QDQ)"]["test_acc"] - rows["ONNX fp32"]["test_acc"]) <= 2.0
    # the share of test images given fp32's class: all of them for PyTorch, nearly all for ONNX fp32
    assert rows["PyTorch fp32"]["agreement"] == 100.0 and rows["ONNX fp32"]["agreement"] >= 99.9
    assert 50.0 <= rows["ONNX int8 (QDQ)"]["agreement"] <= 100.0
    assert record["max_abs_logit_diff_fp32"] <= ATOL * 100  # checked inside against atol + rtol|x|
    assert rows["ONNX int8 (QDQ)"]["size_mb"] < rows["ONNX fp32"]["size_mb"]
    for row in rows.values():
        assert row["latency_ms_b1"] > 0 and row["latency_ms_b32"] > 0
    assert (files / "model.onnx").is_file() and (files / "model-int8.onnx").is_file()
    assert not (files / "model-prepared.onnx").exists()
    markdown = (files / "export.md").read_text()
    assert "| ONNX int8 (QDQ)" in markdown and "median of 5 runs" in markdown
    # how busy the machine was while the latency was timed, and the note when it was (study.busy.OtherLoad)
    assert 0 <= record["other_load"] <= 1
    assert ("the machine was busy" in markdown) == (record["other_load"] > BUSY_SHARE) == bool(record["busy_note"])
    printed = capsys.readouterr().out
    assert "| ONNX fp32" in printed and "Traceback" not in printed
    # The exported file runs on its own, at a batch size it was not exported with.
    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(str(files / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(None, {"images": np.zeros((7, 3, 32, 32), np.float32)})[0].shape == (7, 10)


@pytest.mark.parametrize("args, words", [
    (["--threads", "0"], "--threads must be >= 1"),
    (["--trial", "abc"], "--trial and --front are for sweeps"),
    (["--best", "--front"], "not allowed with argument"),
])
def test_bad_flags_are_one_line_exit_2(fashion_mnist_run, args, words, capsys):
    assert export.main([str(fashion_mnist_run), *args]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1


def test_an_out_that_is_a_file_is_one_line(fashion_mnist_run, tmp_path, capsys):
    """Issue 27, class 4: a NotADirectoryError traceback before."""
    (tmp_path / "a-file").write_text("x")
    assert export.main([str(fashion_mnist_run), "--out", str(tmp_path / "a-file")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a file, not a directory" in err and "Traceback" not in err


def test_bad_run_directories_are_one_line_exit_2(fashion_mnist_run, tmp_path, capsys):
    no_checkpoint = tmp_path / "no-checkpoint"
    no_checkpoint.mkdir()
    shutil.copy(fashion_mnist_run / "config.json", no_checkpoint)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("[1, 2]")
    for run_dir, words in ((tmp_path / "missing", "is not a directory"), (no_checkpoint, "has no checkpoint"),
                           (broken, "does not hold a JSON object"), (tmp_path, "not a Ray Tune experiment")):
        assert export.main([str(run_dir)]) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1, err
    assert not (no_checkpoint / "export").exists()


def test_damaged_files_of_a_run_are_one_line_exit_2(fashion_mnist_run, tmp_path, capsys):
    """Issue 27, class 3: the export's own reads. A summary whose test accuracy is text (a ValueError
    traceback) and a checkpoint whose best weights are a string (a TypeError from load_state_dict)."""
    import json

    import torch

    text_acc = shutil.copytree(fashion_mnist_run, tmp_path / "text-acc")
    summary = json.loads((text_acc / "summary.json").read_text())
    (text_acc / "summary.json").write_text(json.dumps({**summary, "test_acc": "abc"}))
    no_weights = shutil.copytree(fashion_mnist_run, tmp_path / "no-weights")
    saved = torch.load(no_weights / "checkpoint" / "checkpoint.pt", weights_only=True)
    torch.save({**saved, "best_model": "abc"}, no_weights / "checkpoint" / "checkpoint.pt")
    for run_dir, words in ((text_acc, "summary.json: test_acc holds 'abc', not a number"),
                           (no_weights, "holds no model weights (its best_model or model is a str")):
        assert export.main([str(run_dir), "--repeats", "1", "--calibration", "8"]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err
        assert not (run_dir / "export").exists()
    # a run without its test pass (train.py --config of a screen trial: evaluate_test false) has none to report
    from deploy.choose import choose

    no_test = shutil.copytree(fashion_mnist_run, tmp_path / "no-test")
    (no_test / "summary.json").write_text(json.dumps({k: v for k, v in summary.items() if k != "test_acc"}))
    (source,) = choose(no_test, [], False, False, "params")
    assert source.reported_test_acc is None


def test_a_latency_file_of_the_wrong_shape_is_read_as_none(tmp_path):
    """latency_alone.json whose trials' figures are text or not objects: as if it were missing (the
    front is drawn from the in-trial latencies), never an AttributeError in the report or the export."""
    import json

    from study.layout import LATENCY_FILE, read_latency_alone

    good = {"trials": {"a_00000": {"latency_ms_b1": 1.5, "latency_ms_b32": 9.0}}}
    for data, expected in ((good, good), ({"trials": {"a_00000": "fast"}}, None),
                           ({"trials": {"a_00000": {"latency_ms_b1": "fast"}}}, None), ({"trials": []}, None)):
        (tmp_path / LATENCY_FILE).write_text(json.dumps(data))
        assert read_latency_alone(tmp_path) == expected


def test_the_script_runs_from_the_repository_root(tmp_path):
    proc = subprocess.run([sys.executable, "deploy/export.py", str(tmp_path / "none")], capture_output=True,
                          text=True, cwd=ROOT)
    assert proc.returncode == 2 and proc.stderr.startswith("export: error:") and "Traceback" not in proc.stderr


def test_other_load_counts_the_other_processes_cpu_time_not_our_own(tmp_path):
    """A process spinning beside the timed block takes one CPU: its share of the machine is counted;
    this process spinning inside the block is not, nor is a child of it (a local Ray the driver
    started is the sweep's own work, not other load)."""
    import os
    import time

    from study.busy import OtherLoad
    from tests.helpers import other_process_spinning

    cpus = os.cpu_count() or 1
    with other_process_spinning(tmp_path), OtherLoad() as busy:
        time.sleep(1.5)
    assert busy.share >= 0.7 / cpus and "the machine was busy" in busy.note()
    with OtherLoad() as ours:
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            pass
    assert ours.share < busy.share - 0.5 / cpus  # our own spinning is not another process's load
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        with OtherLoad() as children:
            time.sleep(1.5)
    finally:
        child.kill()
        child.wait()
    assert children.share < busy.share - 0.5 / cpus  # a descendant's time is ours
