"""sweep.storage: the disk-space reserve and the driver's guard (stop like Ctrl-C on a full disk, keep
its own atomic record of every result). The full-disk sweeps themselves run in test_reliability_sweep.py
(a real tmpfs filled for real)."""
import json
import signal
from collections import namedtuple
from types import SimpleNamespace

import pytest

from study.layout import RECORDS_DIR, read_result_rows, record_path
from sweep import storage

Usage = namedtuple("Usage", "total used free")


@pytest.fixture(autouse=True)
def no_running_sweep(monkeypatch):
    """A sweep run earlier in this process leaves storage.running_dir set (the driver's running phase)."""
    monkeypatch.setattr(storage, "running_dir", None)


def test_the_reserve_is_claimed_before_trials_and_released_after(tmp_path):
    storage.reserve(str(tmp_path))
    reserve = tmp_path / storage.RESERVE_FILE
    assert reserve.stat().st_size == storage.RESERVE_BYTES
    assert not storage.stopped_full(str(tmp_path)) and not storage.is_low(str(tmp_path))
    storage.release(str(tmp_path))
    assert not reserve.exists() and storage.stopped_full(str(tmp_path))
    assert storage.is_low(str(tmp_path))  # a trial waits once the guard gave the reserve up
    assert not storage.is_low(str(tmp_path / "on-another-node"))  # not this node's to check
    assert not storage.stopped_full("s3://bucket/exp") and not storage.is_low("s3://bucket/exp")


def test_the_guard_stops_the_sweep_like_ctrl_c_when_the_disk_runs_low(tmp_path, monkeypatch):
    storage.reserve(str(tmp_path))
    raised = []
    monkeypatch.setattr(signal, "raise_signal", raised.append)
    guard = storage.StorageGuard(str(tmp_path))
    monkeypatch.setattr(storage.shutil, "disk_usage", lambda _: Usage(1 << 30, 0, storage.LOW_BYTES * 2))
    guard.on_step_begin(0, [])
    assert not guard.full and raised == []
    monkeypatch.setattr(storage.shutil, "disk_usage", lambda _: Usage(1 << 30, 0, storage.LOW_BYTES - 1))
    guard.checked = 0.0
    guard.on_step_begin(1, [])
    assert guard.full and raised == [signal.SIGUSR1] and storage.stopped_full(str(tmp_path))  # reserve freed
    guard.on_trial_result(1, [], SimpleNamespace(trial_id="t1"), {"epoch": 1})
    assert not (tmp_path / RECORDS_DIR).exists()  # nothing more is written once stopped


def test_the_guard_adds_to_the_record_a_first_run_left(tmp_path):
    """A resumed sweep's guard is new: it reads the rows the first run recorded and appends."""
    first = storage.StorageGuard(str(tmp_path))
    first.on_trial_result(0, [], SimpleNamespace(trial_id="t1"), {"epoch": 1, "config": {"lr": 0.1}})
    second = storage.StorageGuard(str(tmp_path))
    second.on_trial_result(0, [], SimpleNamespace(trial_id="t1"), {"epoch": 2})
    path = record_path(tmp_path, "t1")
    assert read_result_rows(path) == [{"epoch": 1}, {"epoch": 2}]  # the config is not copied into every row
    assert json.loads(path.read_text())["trial_id"] == "t1"
    assert sorted(p.name for p in path.parent.iterdir()) == ["t1.json"]  # written atomically: no temporary left


def test_the_disk_guard_follows_an_experiment_that_was_moved(tmp_path, monkeypatch):
    """A resumed Tuner's callbacks come from tuner.pkl with the directory the sweep started in; after
    the user moved the experiment, the guard records results in (and watches) the running one."""
    guard = storage.StorageGuard(str(tmp_path / "where-it-started"))  # gone: moved
    moved = tmp_path / "moved"
    moved.mkdir()
    monkeypatch.setattr(storage, "running_dir", str(moved))
    guard.on_step_begin(0, [])  # checks the free space of the running directory (the old one is gone)
    guard.on_trial_result(0, [], SimpleNamespace(trial_id="t1"), {"epoch": 1, "val_acc": 50.0})
    assert json.loads((moved / RECORDS_DIR / "t1.json").read_text())["rows"] == [{"epoch": 1, "val_acc": 50.0}]
    assert not (tmp_path / "where-it-started").exists() and not guard.full


def test_a_state_file_a_kill_cut_short_is_put_back_from_its_last_good_copy(tmp_path):
    """Tune copies its experiment state into the storage path in place: a kill during the copy leaves it
    empty. The guard keeps each readable version this user's driver signed (sweep.trust: it signs what
    Tune saves before the copy), signed itself; --resume puts it back, or sets a cut file aside."""
    from sweep import trust

    state = tmp_path / "experiment_state-2026-12-02_01-00-00.json"
    state.write_text('{"trial_data": [1]}')
    seen = {}
    storage.keep_state(str(tmp_path), seen)
    good = tmp_path / (state.name + storage.GOOD_SUFFIX)
    assert not good.exists() and not seen  # not signed: not kept
    trust.sign_files(tmp_path, [state])
    storage.keep_state(str(tmp_path), seen)
    assert json.loads(good.read_text()) == {"trial_data": [1]} and seen and trust.is_signed(tmp_path, good)
    state.write_text('{"trial_da')  # cut short: the copy is kept as it was
    storage.keep_state(str(tmp_path), {})
    assert json.loads(good.read_text()) == {"trial_data": [1]}
    assert storage.repair_state(str(tmp_path)) == [f"{state.name} was cut short by the interruption: continuing "
                                                   "from its last complete copy"]
    assert json.loads(state.read_text()) == {"trial_data": [1]} and storage.repair_state(str(tmp_path)) == []
    assert trust.unsigned(str(tmp_path)) == []  # the copy put back is signed under its own name too
    good.unlink()
    state.write_text("")
    assert "set aside" in storage.repair_state(str(tmp_path))[0]
    assert not state.exists() and (tmp_path / (state.name + storage.CUT_SUFFIX)).exists()
