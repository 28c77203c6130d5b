"""Reliability of sweeps, with faults injected for real into Ray Tune experiments (docs/RELIABILITY.md).

- the driver killed: Ctrl-C (SIGINT to its process group) mid-trial, and SIGKILL at the earliest
  moments (as soon as sweep.json, then tuner.pkl, exist), then ``--resume``; test_sweep.py kills it
  (SIGKILL) after the first finished trial;
- a trial that raises (RuntimeError once; torch's OutOfMemoryError every time), and a trial whose worker
  process is SIGKILLed: retried from the checkpoint per ``--max-failures``;
- a trial that diverges inside an ASHA sweep;
- bad input that only the driver can see (storage path, data directory, corrupt dataset);
- what the local Ray listens on while a sweep runs.

The CLI runs as a subprocess where the driver itself is killed, else in this process on one local Ray
(2 CPUs, no dashboard). Every process here gets RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (Ray on
127.0.0.1) and HTTP(S) proxies on a closed loopback port: nothing leaves this machine, even if a
trial tried to download a dataset.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest
import ray
from ray import tune

import sweep.tuner
from analysis.report import main as report_main
from study.layout import RECORDS_DIR, TRIAL_CONFIG_FILE, read_result_rows
from study.load import load
from study.ray_files import TRIAL_ID
from sweep import run, trust
from tests.helpers import make_cifar_archive
from training import sources

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow
OFFLINE = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "http_proxy": "http://127.0.0.1:9",
           "https_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
           "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "127.0.0.1,localhost,::1"}


# ------------------------------------------------------------------------------------ helpers
def rows(trial_dir: Path) -> list[dict]:
    """result.json's complete lines (a line cut short by a kill is skipped)."""
    out = []
    path = trial_dir / "result.json"
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def screen(experiment: Path) -> Path:
    """The screen phase's Ray Tune experiment (sweep.planning): every sweep here has that one phase."""
    return experiment / "screen"


def trial_dirs(experiment: Path) -> dict[str, Path]:
    """trial_id -> directory, in the order Tune created them."""
    found = {TRIAL_ID.search(d.name).group(1): d for d in screen(experiment).iterdir()
             if d.is_dir() and TRIAL_ID.search(d.name)}
    return dict(sorted(found.items()))


def results_of(experiment: Path) -> tune.ResultGrid:
    return tune.ResultGrid(tune.ExperimentAnalysis(str(screen(experiment)), default_metric="val_acc",
                                                   default_mode="max"))


def ray_statuses(experiment: Path) -> dict[str, str]:
    return {t.trial_id: t.status for t in tune.ExperimentAnalysis(str(screen(experiment))).trials}


def epochs_of(trial_dir: Path) -> list[int]:
    return [row["epoch"] for row in rows(trial_dir)]


def csv_epochs(trial_dir: Path) -> list[int]:
    """Epochs in progress.csv, which keeps every row of a restarted trial (result.json may not)."""
    import pandas as pd

    return pd.read_csv(trial_dir / "progress.csv")["epoch"].tolist()


def launch(log: Path, env: dict, *args: str) -> subprocess.Popen:
    """sweep/run.py in its own session (so the test can signal it and the Ray it starts, as a terminal
    would), on a private local Ray."""
    return subprocess.Popen([sys.executable, "sweep/run.py", *args, "--address", "local"], cwd=ROOT, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def finish(process: subprocess.Popen, timeout: float) -> int:
    """Wait for a launched CLI; whatever happens, leave nothing of its session (its Ray) running."""
    try:
        return process.wait(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture
def cli_env(tmp_path):
    return {**os.environ, **OFFLINE, "ABLATION_DATA_DIR": str(tmp_path / "data")}


def wait_for(condition, process: subprocess.Popen | None, timeout: float, what: str, poll: float = 0.1):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process is None or process.poll() is None, f"the driver ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll)


def listening_sockets(pid: int) -> set[tuple[str, str, int]]:
    """(process name, address, port) of every TCP socket listening in the process tree of `pid`."""
    found = set()
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return found
    for proc in procs:
        try:
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found.add((proc.name(), conn.laddr.ip, conn.laddr.port))
            if "dashboard.py" in " ".join(proc.cmdline()):
                found.add(("dashboard --host", next((a.split("=", 1)[1] for a in proc.cmdline()
                                                     if a.startswith("--host=")), "?"), 0))
        except psutil.Error:
            continue
    return found


def is_loopback(address: str) -> bool:
    return address.removeprefix("::ffff:").startswith("127.") or address in ("::1", "localhost")


def quiet_console(log: str) -> None:
    """A successful or Ctrl-C'd sweep's console holds our lines and the trial table: no traceback, no
    Ray log line (Ray's start, token-auth and snapshot warnings, its Tuner.restore advice)."""
    noisy = [line for line in log.splitlines()
             if "Traceback" in line or " WARNING " in line or " INFO " in line or "Tuner.restore" in line
             or "Error" in line]
    assert not noisy, "\n".join(noisy)


# ------------------------------------------------------------------------------------ the driver killed
def test_ctrl_c_mid_trial_then_resume_runs_nothing_twice(tmp_path, cli_env, capsys, monkeypatch):
    """Ctrl-C (SIGINT to the driver's process group, as a terminal sends it) while the second of three
    trials is mid-run, one trial at a time; then --resume. The listening sockets of the driver's Ray
    are recorded meanwhile: every one on 127.0.0.1, the dashboard (if any) too. Before it resumes, the
    experiment is received as a colleague's copy (issue 37, class 1: refused until --trust) and moved
    (class 5: it resumes in its new place, nothing written in the old)."""
    experiment = tmp_path / "sigint"
    argv = ["--space", "smoke", "--samples", "3", "--set", "attention=none", "--epochs", "3",
            "--scheduler", "fifo", "--max-concurrent", "1", "--storage-path", str(tmp_path), "--name", "sigint"]
    driver = launch(tmp_path / "first.log", cli_env, *argv)
    sockets: set = set()

    def second_trial_mid_run() -> bool:
        sockets.update(listening_sockets(driver.pid))
        dirs = list(trial_dirs(experiment).values()) if screen(experiment).is_dir() else []
        if len(dirs) < 2:
            return False
        first_rows = rows(dirs[0])
        return bool(first_rows) and "epochs_run" in first_rows[-1] and bool(rows(dirs[1]))

    try:
        wait_for(second_trial_mid_run, driver, 240, "the second trial's first epoch")
        os.killpg(driver.pid, signal.SIGINT)
    finally:
        code = finish(driver, timeout=120)
    log = (tmp_path / "first.log").read_text()
    assert code == 130 and "continue with: python sweep/run.py --resume" in log, log[-3000:]
    quiet_console(log)  # our --resume line, none of Ray's advice (Tuner.restore) or warnings
    assert sockets and all(is_loopback(address) for _, address, _ in sockets), sorted(sockets)
    before = {trial_id: rows(d) for trial_id, d in trial_dirs(experiment).items()}
    first, second = list(before)[:2]
    assert "epochs_run" in before[first][-1] and "epochs_run" not in before[second][-1]
    assert trust.unsigned(str(experiment)) == []  # every file Tune saved is signed with this user's key

    # Issue 37, class 1: the experiment as a colleague would receive it (another key) is refused in one
    # line, writing nothing; --trust signs it, and it resumes with that key
    colleague = {**cli_env, "XDG_CONFIG_HOME": str(tmp_path / "colleague")}
    monkeypatch.setenv("XDG_CONFIG_HOME", colleague["XDG_CONFIG_HOME"])
    files = sorted(p.relative_to(tmp_path) for p in experiment.rglob("*"))
    assert run.main(["--resume", str(experiment)]) == 2
    assert "is not signed by a sweep of yours" in capsys.readouterr().err
    assert sorted(p.relative_to(tmp_path) for p in experiment.rglob("*")) == files
    assert run.main(["--trust", str(experiment)]) == 0 and trust.unsigned(str(experiment)) == []
    # class 5: and moved before it resumes (the third trial is made by Tune's restored searcher; it trained
    # and wrote under the old path)
    old, experiment = experiment, tmp_path / "moved" / "sigint"
    experiment.parent.mkdir()
    old.rename(experiment)

    resumed = launch(tmp_path / "resumed.log", colleague, "--resume", str(experiment))
    assert finish(resumed, timeout=300) == 0, (tmp_path / "resumed.log").read_text()[-3000:]
    resumed_log = (tmp_path / "resumed.log").read_text()
    assert resumed_log.startswith(f"resuming {experiment}: 1 done, 2 left\n"), resumed_log[:500]
    assert "\n3 trials: 3 finished: " in resumed_log
    quiet_console(resumed_log)
    results = results_of(experiment)
    assert len(results) == 3 and results.num_errors == 0  # the space's 3 trials, no more
    assert all(r.metrics["epoch"] == 3 and r.metrics["status"] == "finished" for r in results)
    dirs = trial_dirs(experiment)
    assert rows(dirs[first]) == before[first]  # finished before Ctrl-C: not run again, not even one epoch
    epochs = epochs_of(dirs[second])
    assert epochs == sorted(epochs) and epochs.count(1) == 1 and epochs[-1] == 3, epochs  # from its checkpoint
    assert len({row["pid"] for row in rows(dirs[second])}) == 2  # two processes: before and after
    assert load(experiment).trials["stop_reason"].tolist() == ["finished"] * 3
    assert not old.exists()  # nothing went back to where the experiment was
    # what the resumed run saved is signed too (Tune's restore copies the phase's *.json into its staging
    # directory and uploads it back: a signature file named .json was put back as it was at the restore)
    assert trust.unsigned(str(experiment)) == []


@pytest.mark.parametrize("moment", ["sweep.json", "screen/tuner.pkl"])
def test_driver_killed_at_its_first_moments_can_be_resumed(moment, tmp_path, cli_env, local_ray, capsys):
    """SIGKILL as soon as `moment` exists: sweep.json is written before Ray's Tuner saves tuner.pkl, and
    tuner.pkl before any trial or search state is saved. --resume must still run the space's trials (here
    run.main in this process, on the module's Ray: a second CLI start would add its own Ray's start-up)."""
    experiment = tmp_path / "early"
    argv = ["--space", "smoke", "--scheduler", "fifo", "--epochs", "1", "--storage-path", str(tmp_path), "--name", "early"]
    driver = launch(tmp_path / "first.log", cli_env, *argv)
    try:
        wait_for(lambda: (experiment / moment).exists(), driver, 120, moment, poll=0.002)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        finish(driver, timeout=60)
    left = sorted(p.name for p in experiment.iterdir())
    code = run.main(["--resume", str(experiment)])
    said = [line for line in "".join(capsys.readouterr()).splitlines()
            if "error" in line.lower() or " trials, " in line]
    assert code == 0, f"killed with {left}; --resume exited {code}: " + "\n".join(said[-8:])
    results = results_of(experiment)
    assert len(results) == 2 and results.num_errors == 0, f"killed with {left}"
    assert sorted(r.config["attention"] for r in results) == ["channel", "none"]


def test_sigterm_while_tune_makes_a_huge_plan_ends_the_driver_at_once(tmp_path, cli_env):
    """Issue 37, class 9: half a million seeds of the smoke grid; SIGTERM once Tune's first step is making
    its 1,000,000 trials up front (minutes: Tune acts on a stop only between steps). Before: still running
    90 s later. Now: the step is interrupted 10 s after the signal (sweep.storage.interrupt_if_stuck),
    exit 143 with one line naming --resume, no traceback."""
    experiment = tmp_path / "huge"
    argv = ["--space", "smoke", "--samples", "500000", "--storage-path", str(tmp_path), "--name", "huge"]
    driver = launch(tmp_path / "huge.log", cli_env, *argv)
    try:
        wait_for(lambda: (experiment / "screen" / "tuner.pkl").exists(), driver, 240, "Tune's Tuner")
        time.sleep(2)  # into its first step
        os.killpg(driver.pid, signal.SIGTERM)
        signalled = time.monotonic()
        code = driver.wait(timeout=60)
        took = time.monotonic() - signalled
    finally:
        finish(driver, timeout=10)
    log = (tmp_path / "huge.log").read_text()
    assert code == 143 and took < 40, (code, took, log[-2000:])
    assert f"run.py: stopped at once, within a step of Ray Tune (it had not ended 10 s after the stop signal, or a " \
           f"second one came); what it saved is kept; continue with: python sweep/run.py --resume {experiment}" in log
    assert "Traceback" not in log


# ------------------------------------------------------------------------------------ in-process sweeps
@pytest.fixture(scope="module")
def local_ray():
    with pytest.MonkeyPatch.context() as patch:
        for key, value in OFFLINE.items():  # the workers inherit the environment of ray.init
            patch.setenv(key, value)
        ray.init(address="local", num_cpus=2, include_dashboard=False)
        yield
        ray.shutdown()


def faulty_trainable(record_dir: str):
    """sweep.trainable.train_trial with a fault after the first epoch an attempt reports: a RuntimeError on
    the first attempt of the attention=none trial, torch's OutOfMemoryError on every attempt of the
    attention=channel one. Each attempt appends (pid, whether Tune handed it a checkpoint) to
    RECORD_DIR/<trial_id>. Defined in a closure so Ray ships it by value to its workers."""

    def train_trial(config, smoke=False, experiment_dir=None, fraction=1.0, tested=True):
        import torch
        from ray import tune as ray_tune

        from sweep import trainable

        trial_id = ray_tune.get_context().get_trial_id()
        log = Path(record_dir, trial_id)
        attempt = len(log.read_text().splitlines()) if log.exists() else 0
        with log.open("a") as out:
            out.write(json.dumps({"pid": os.getpid(), "checkpoint": ray_tune.get_checkpoint() is not None}) + "\n")
        real = trainable.report_to_tune

        def report_then_fail(metrics, checkpoint_dir):
            real(metrics, checkpoint_dir)
            if config["attention"] == "channel":
                raise torch.OutOfMemoryError("CUDA out of memory (injected by the test)")
            if attempt == 0:
                raise RuntimeError("injected fault on the first attempt")

        trainable.report_to_tune = report_then_fail
        try:
            trainable.train_trial(config, smoke, experiment_dir, fraction, tested)
        finally:
            trainable.report_to_tune = real

    return train_trial


@pytest.fixture(scope="module")
def faulty_sweep(local_ray, tmp_path_factory):
    """The smoke space (attention none / channel, 3 epochs) with faulty_trainable and --max-failures 1,
    through the CLI's own code (run.main) with Ray's trainable swapped for the faulty one."""
    tmp_path = tmp_path_factory.mktemp("faults")
    record = tmp_path / "attempts"
    record.mkdir()
    argv = ["--space", "smoke", "--epochs", "3", "--scheduler", "fifo", "--max-failures", "1",
            "--storage-path", str(tmp_path), "--name", "faults"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sweep.tuner, "train_trial", faulty_trainable(str(record)))
        stdout = tmp_path / "stdout"
        with stdout.open("w") as out, contextlib.redirect_stdout(out):
            code = run.main(argv)
    results = {r.config["attention"]: r for r in results_of(tmp_path / "faults")}
    return code, stdout.read_text(), tmp_path / "faults", record, results["none"], results["channel"]


def test_a_trial_that_raises_is_retried_from_its_checkpoint_and_reported(faulty_sweep, tmp_path):
    code, out, experiment, record, retried, oom = faulty_sweep
    assert code == 0 and "2 trials: 1 finished, 1 errored" in out  # the sweep completes: one trial of two errored
    assert retried.error is None and retried.metrics["status"] == "finished"
    assert "out of memory" in str(oom.error)
    for result, epochs in ((retried, [1, 2, 3]), (oom, [1, 2])):  # oom: one epoch per attempt (1 + 1 retry)
        attempts = [json.loads(line) for line in (record / result.metrics["trial_id"]).read_text().splitlines()]
        assert [a["checkpoint"] for a in attempts] == [False, True]  # the retry got the checkpoint
        assert len({a["pid"] for a in attempts}) == 2
        assert csv_epochs(Path(result.path)) == epochs  # epoch 1 once: the retry continued from it
    statuses = ray_statuses(experiment)
    assert statuses[retried.metrics["trial_id"]] == "TERMINATED" and statuses[oom.metrics["trial_id"]] == "ERROR"
    # The analysis and the report say which trial errored and why.
    trials = load(experiment).trials.set_index("attention")
    assert trials.loc["none", "stop_reason"] == "finished" and trials.loc["channel", "stop_reason"] == "errored"
    assert "OutOfMemoryError" in trials.loc["channel", "error"]
    assert report_main([str(experiment), "--out", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    assert f"Errored `{oom.metrics['trial_id']}`" in text and "out of memory" in text
    # Provenance of the retried trial: resolved config, versions, git revision.
    saved = json.loads(Path(retried.path, TRIAL_CONFIG_FILE).read_text())
    assert saved["config"]["epochs"] == 3 and saved["versions"]["ray"] == ray.__version__
    assert "git_revision" in saved and saved["space_config"]["attention"] == "none"


def test_the_analysis_keeps_the_epochs_a_retried_trial_ran_before_it_failed(faulty_sweep):
    """Ray 2.60 rewrites a restarted trial's result.json from a stale copy: the rows reported before the
    failure vanish from it (progress.csv keeps them). The epoch frame must still hold every epoch."""
    _, _, experiment, _, retried, oom = faulty_sweep
    epochs = load(experiment).epochs
    for result, expected in ((retried, [1, 2, 3]), (oom, [1, 2])):
        assert epochs[epochs["trial_id"] == result.metrics["trial_id"]]["epoch"].tolist() == expected


def signal_a_running_worker(experiment: Path, signum: int, sent: dict) -> threading.Thread:
    """A thread that, once a screen trial has reported an epoch and is still running, sends `signum` to
    its Ray worker process (the pid is in its own results) and records trial_id, pid and epoch in `sent`."""
    def send():
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            for trial_id, trial_dir in trial_dirs(experiment).items() if screen(experiment).is_dir() else []:
                seen = rows(trial_dir)
                if seen and "epochs_run" not in seen[-1]:
                    sent.update(trial_id=trial_id, pid=seen[-1]["pid"], epoch=seen[-1]["epoch"])
                    os.kill(seen[-1]["pid"], signum)
                    return
            time.sleep(0.02)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_a_killed_worker_process_is_retried_from_its_checkpoint(local_ray, tmp_path):
    """SIGKILL the Ray worker process of a running trial (its pid is in its own results): Tune restarts
    the trial from its last checkpoint in a new process, and the sweep completes."""
    experiment = tmp_path / "killed"
    killed: dict = {}
    killer = signal_a_running_worker(experiment, signal.SIGKILL, killed)
    argv = ["--space", "smoke", "--epochs", "3", "--scheduler", "fifo",
            "--max-failures", "1", "--storage-path", str(tmp_path), "--name", "killed"]
    assert run.main(argv) == 0
    killer.join()
    assert killed, "no trial was running when the killer looked"
    results = results_of(experiment)
    assert len(results) == 2 and results.num_errors == 0
    assert all(r.metrics["status"] == "finished" and r.metrics["epoch"] == 3 for r in results)
    trial_dir = trial_dirs(experiment)[killed["trial_id"]]
    epochs = csv_epochs(trial_dir)
    assert epochs == sorted(epochs) and epochs.count(1) == 1 and epochs[-1] == 3, epochs  # from its checkpoint
    assert {row["pid"] for row in rows(trial_dir) if row["epoch"] > killed["epoch"]} - {killed["pid"]}  # new process


def test_a_time_budget_shorter_than_the_sweep_ends_it_in_time_and_resume_finishes_it(local_ray, tmp_path, capsys):
    """Issue 37, class 14: --time-budget 10s for 12 trials of 2 epochs, one at a time (26 s of trials on
    the quiet 2-core AMD machine): trials start only while one can end in the time left, the sweep ends by the
    budget (plus a trial's stop) with exit status 75 and one line naming --resume; --resume (no budget)
    runs the rest, nothing finished runs again."""
    experiment = tmp_path / "budget"
    argv = ["--space", "smoke", "--samples", "6", "--epochs", "2", "--scheduler", "fifo", "--max-concurrent", "1",
            "--storage-path", str(tmp_path), "--name", "budget"]
    started = time.monotonic()
    code = run.main([*argv, "--time-budget", "10s"])
    took = time.monotonic() - started
    out, err = capsys.readouterr()
    assert code == 75, (code, took, out[-2000:])
    assert "run.py: --time-budget 10 s spent: no trial started that could not end in time" in err, err[-2000:]
    assert f"continue with: python sweep/run.py --resume {experiment}" in err and "Traceback" not in err
    reasons = load(experiment).trials["stop_reason"].value_counts()
    done = int(reasons.get("finished", 0))
    assert done < 12 and took < 60, (reasons, took)
    before = {trial_id: rows(d) for trial_id, d in trial_dirs(experiment).items()}
    assert run.main(["--resume", str(experiment)]) == 0
    trials = load(experiment).trials
    assert len(trials) == 12 and set(trials["stop_reason"]) == {"finished"}
    finished = [t for t, r in before.items() if r and "epochs_run" in r[-1]]
    assert len(finished) == done and all(rows(trial_dirs(experiment)[t]) == before[t] for t in finished)


FAULTY = """import time
from pathlib import Path

import torch
from torch import nn

CGROUP = "{cgroup}"


class Faulty(nn.Module):
    \"\"\"The first training step after a validation pass (the second epoch's) never returns with
    fault="hang"; with fault="hog" it waits until the test has put this process in its memory cgroup,
    then allocates 1 GiB, past the cgroup's limit.\"\"\"

    def __init__(self, num_classes, fault):
        super().__init__()
        self.fault, self.trained, self.validated = fault, False, False
        self.body = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, num_classes))

    def forward(self, x):
        if not self.training:
            self.validated = self.validated or self.trained
        elif self.fault == "hang" and self.validated:
            time.sleep(3600)
        elif self.fault == "hog" and self.validated:
            deadline = time.time() + 120
            while CGROUP not in Path("/proc/self/cgroup").read_text() and time.time() < deadline:
                time.sleep(0.1)
            self.held = torch.ones(2 ** 28)
        else:
            self.trained = True
        return self.body(x)


def faulty(num_classes, fault: str = "none"):
    return Faulty(num_classes, fault)


faulty.toggles = {{"fault": ["none", "hang", "hog"]}}
"""
MEMORY_CGROUPS = Path("/sys/fs/cgroup/memory")


@contextlib.contextmanager
def memory_cgroup(name: str, limit: int):
    """A cgroup (v1) whose processes may use `limit` bytes (swap included): past it, the kernel's OOM
    killer kills one. Removed afterwards."""
    group = MEMORY_CGROUPS / name
    try:
        group.mkdir()
    except OSError as exc:
        pytest.skip(f"no writable memory cgroup here ({exc.strerror})")
    try:
        (group / "memory.limit_in_bytes").write_text(str(limit))
        with contextlib.suppress(OSError):
            (group / "memory.memsw.limit_in_bytes").write_text(str(limit))
        yield group
    finally:
        for _ in range(100):
            with contextlib.suppress(OSError):
                group.rmdir()
                break
            time.sleep(0.1)


def test_a_trial_that_hangs_or_is_killed_for_memory_is_one_line_and_the_sweep_goes_on(local_ray, tmp_path, capsys):
    """Issue 37, classes 12 and 13, in one sweep of a user's model with three arms:
    - fault=hang hangs in its forward pass after its first epoch, which held its slot forever. With
      --trial-timeout 30 the sweep stops it 30 s after its last report, kills its worker (it never answers
      Tune's stop) and records it as timed out (console, report: excluded like an errored trial);
    - fault=hog is killed by the kernel's OOM killer (the test puts its worker in a memory cgroup limited
      to 256 MiB; it allocates 1 GiB in its second epoch): one line that says memory, the report names it,
      and it is saved as errored (Tune kept such a trial RUNNING in its saved state);
    - fault=none finishes, and --resume runs nothing again."""
    name = f"ablation-sweeper-test-{os.getpid()}"
    with memory_cgroup(name, 256 << 20) as group:
        (tmp_path / "faulty.py").write_text(FAULTY.format(cgroup=name))
        space = tmp_path / "faulty.yaml"
        space.write_text(f"params:\n  model: {tmp_path / 'faulty.py'}:faulty\n  dataset: synthetic\n  subset: 512\n"
                         "  batch_size: 64\n  epochs: 3\n  measure_latency: false\n"
                         "  fault: {grid: [none, hang, hog]}\n")
        experiment = tmp_path / "faulty"
        moved: dict = {}

        def move_the_hog() -> None:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and not moved:
                for trial_dir in (screen(experiment).glob("*fault=hog*") if screen(experiment).is_dir() else []):
                    if rows(trial_dir):
                        moved["pid"] = rows(trial_dir)[0]["pid"]
                        (group / "cgroup.procs").write_text(str(moved["pid"]))
                time.sleep(0.1)

        mover = threading.Thread(target=move_the_hog, daemon=True)
        mover.start()
        argv = ["--space", str(space), "--no-confirm", "--scheduler", "fifo", "--trial-timeout", "30",
                "--storage-path", str(tmp_path), "--name", "faulty"]
        started = time.monotonic()
        code = run.main(argv)
        took = time.monotonic() - started
        mover.join()
        out, err = capsys.readouterr()
    assert moved, "the hog never reported its first epoch"
    trials = load(experiment).trials.set_index("fault")
    assert code == 0 and took < 240 and "1 finished, 1 timed out, 1 errored" in out, (code, took, out[-3000:])
    assert dict(trials["stop_reason"]) == {"none": "finished", "hang": "timed_out", "hog": "errored"}, trials
    hung, hog = trials.loc["hang", "trial_id"], trials.loc["hog", "trial_id"]
    assert ray_statuses(experiment)[hog] == "ERROR"  # saved as ended
    failed = {line.split()[2]: line for line in err.splitlines() if line.startswith("run.py: trial ")}
    assert len(failed) == 2, err[-3000:]

    # the hang
    assert trials.loc["hang", "last_epoch"] == 1 and trials.loc["hang", "error"] == (
        "timed out: no epoch reported in 30 s (--trial-timeout 30); the sweep stopped it"), trials.loc["hang", "error"]
    assert failed[f"train_trial_{hung}"].endswith(
        "timed out: no epoch reported in 30 s (--trial-timeout 30); the sweep stopped it; the sweep goes on "
        "(--resume --max-failures N runs it again)") and "1 trial(s) timed out" in err
    pid = rows(trial_dirs(experiment)[hung])[-1]["pid"]

    def gone() -> bool:
        return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

    wait_for(gone, None, 30, "the hung trial's worker to end")  # killed: it never answers Tune's stop

    # the memory kill
    kernel_log = os.access("/dev/kmsg", os.R_OK)  # root here; elsewhere only the hedged line can be given
    said = (f"out of memory: the kernel's OOM killer killed its worker process (pid {moved['pid']}; see dmesg)"
            if kernel_log else "its worker process died (it exited or was killed: when memory runs out, the kernel's")
    assert said in failed[f"train_trial_{hog}"] and "the epochs it reported are kept" in failed[f"train_trial_{hog}"]

    assert report_main([str(experiment), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert f"Timed out `{hung}`: timed out: no epoch reported in 30 s" in report
    assert "| timed_out " in report and "reported no epoch within --trial-timeout" in report
    if kernel_log:
        assert f"Errored `{hog}`: {said}" in report
    before = {t: rows(trial_dirs(experiment)[t]) for t in (hung, hog)}
    assert run.main(["--resume", str(experiment)]) == 0
    assert "3 done, 0 left" in capsys.readouterr().out
    assert {t: rows(trial_dirs(experiment)[t]) for t in (hung, hog)} == before


@pytest.fixture(scope="module")
def diverged_sweep(local_ray, tmp_path_factory):
    """lr 1e30 (no momentum, constant lr) turns the loss into NaN/inf in the first epoch. ASHA runs
    the space, the diverging trial first, one at a time, with a rung after every epoch."""
    tmp_path = tmp_path_factory.mktemp("diverged")
    space = tmp_path / "nan.yaml"
    space.write_text("params:\n  dataset: synthetic\n  subset: 512\n  val_fraction: 0.5\n  width: 0.25\n"
                     "  batch_size: 32\n  augment: none\n  dropout: 0.0\n  init: kaiming\n  scheduler: none\n"
                     "  momentum: 0.0\n  measure_latency: false\n  epochs: 3\n  lr: {grid: [1.0e+30, 0.05]}\n")
    argv = ["--space", str(space), "--no-confirm", "--scheduler", "asha", "--grace-period", "1",
            "--reduction-factor", "2", "--max-concurrent", "1", "--storage-path", str(tmp_path), "--name", "nan"]
    return run.main(argv), tmp_path / "nan"


def test_a_diverging_trial_stops_at_once_as_diverged_not_errored(diverged_sweep):
    code, experiment = diverged_sweep
    assert code == 0
    results = results_of(experiment)
    assert results.num_errors == 0
    by_lr = {r.config["lr"]: r for r in results}
    diverged, learner = by_lr[1e30].metrics, by_lr[0.05].metrics
    assert diverged["status"] == "diverged" and diverged["epochs_run"] == 1 and diverged["training_iteration"] == 1
    assert learner["status"] == "finished" and learner["epoch"] == 3  # not stopped at a rung by the NaN trial
    assert set(ray_statuses(experiment).values()) == {"TERMINATED"}  # Ray: ended normally, no error
    trials = load(experiment).trials.set_index("lr")
    assert trials.loc[1e30, "stop_reason"] == "diverged" and trials.loc[0.05, "stop_reason"] == "finished"


def test_the_report_of_a_sweep_over_lr_lists_the_diverged_trial(diverged_sweep, tmp_path):
    """The report CLI on that experiment (its one factor is lr, which is also a per-epoch column)."""
    result = subprocess.run([sys.executable, "-m", "analysis.report", str(diverged_sweep[1]), "--out",
                             str(tmp_path / "report")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-1500:]
    assert "| diverged" in (tmp_path / "report" / "report.md").read_text()


# ------------------------------------------------------------------------------------ bad input at the driver
def test_an_unusable_storage_path_is_one_line_exit_2(local_ray, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = run.main(["--space", "smoke", "--storage-path", str(blocker), "--name", "x"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("run.py: error: ") and err.count("\n") == 1, err
    assert blocker.read_text() == ""


def test_a_read_only_data_directory_is_one_line_exit_2_and_writes_nothing(local_ray, unwritable_dir, tmp_path,
                                                                          monkeypatch, capsys):
    make_cifar_archive(tmp_path, "cifar10", monkeypatch)
    code = run.main(["--space", "smoke", "--dataset", "cifar10", "--set", f"data_dir={unwritable_dir}",
                     "--storage-path", str(tmp_path / "runs"), "--name", "x"])
    err = capsys.readouterr().err
    assert code == 2 and err == (f"run.py: error: data directory {unwritable_dir} is not writable; choose a "
                                 "writable one with data_dir or $ABLATION_DATA_DIR\n")
    assert not (tmp_path / "runs").exists() and list(unwritable_dir.iterdir()) == []


def test_a_corrupt_dataset_is_fetched_once_more_by_the_driver_then_fails_clearly(local_ray, tmp_path,
                                                                                  monkeypatch, capsys):
    make_cifar_archive(tmp_path, "cifar10", monkeypatch)
    spec = sources.CIFAR_SPECS["cifar10"]
    monkeypatch.setitem(sources.CIFAR_SPECS, "cifar10", dataclasses.replace(spec, md5="0" * 32))  # never matches
    code = run.main(["--space", "smoke", "--dataset", "cifar10", "--set", f"data_dir={tmp_path / 'data'}",
                     "--storage-path", str(tmp_path / "runs"), "--name", "x"])
    lines = capsys.readouterr().err.splitlines()
    assert code == 2 and [line for line in lines if line.startswith("downloading ")] == lines[:2]
    assert lines[2:] == [f"run.py: error: {spec.url} twice gave a file with md5 {spec.md5}, expected {'0' * 32}; put "
                         f"cifar-10-python.tar.gz (md5 {'0' * 32}) into {tmp_path / 'data'} and run again"]
    assert not (tmp_path / "runs").exists() and list((tmp_path / "data").iterdir()) == []


def test_records_cut_short_by_a_kill_are_handled(tmp_path):
    """sweep.json is written atomically; a tuner.pkl that Ray was writing when the driver died (it is
    written once, before anything runs) starts the recorded sweep afresh, unless trials have run."""
    from study.config import UserError
    from study.layout import write_sweep
    from sweep import experiment as exp
    from sweep import run
    from sweep.tuner import restore_tuner

    args = run.build_parser().parse_args(["--space", "smoke", "--scheduler", "fifo", "--storage-path",
                                          str(tmp_path), "--name", "cut"])
    params, plan, record, _ = run.plan_sweep(args)
    write_sweep(plan.experiment_dir, {**record, "plan": dataclasses.asdict(plan)})
    experiment = Path(plan.experiment_dir)
    assert sorted(p.name for p in experiment.iterdir()) == ["sweep.json"]  # no partial file left
    screen(experiment).mkdir()
    (screen(experiment) / "tuner.pkl").write_bytes(b"\x80\x05")  # a pickle cut short
    tuner = restore_tuner(plan, params, retry_errored=False)
    assert isinstance(tuner, tune.Tuner) and (screen(experiment) / "tuner.pkl").stat().st_size > 100
    (screen(experiment) / "tuner.pkl").write_bytes(b"")
    (screen(experiment) / "experiment_state-2026-01-01_00-00-00.json").write_text("{}")
    with pytest.raises(UserError, match="tuner.pkl cannot be read .* trials have run"):
        restore_tuner(plan, params, retry_errored=False)
    (experiment / "sweep.json").write_text('{"plan": ')
    with pytest.raises(UserError, match="sweep.json is not valid JSON"):
        exp.load_plan(plan.experiment_dir)


# ------------------------------------------------------------------------------------ faults of a sweep
def test_two_starts_at_once_one_runs_then_sigterm_saves_it_like_ctrl_c(tmp_path, cli_env):
    """Two drivers started together with one --name: one claims the directory, the other is one line, exit
    2. SIGTERM to the winner (the driver alone, as Kubernetes sends it) mid-trial: Tune saves the
    experiment, the --resume line, exit 143 (it was Ray's stack dump and exit 134)."""
    experiment = tmp_path / "same"
    argv = ["--space", "smoke", "--epochs", "3", "--scheduler", "fifo", "--max-concurrent", "1",
            "--storage-path", str(tmp_path), "--name", "same"]
    drivers = [launch(tmp_path / f"{i}.log", cli_env, *argv) for i in range(2)]
    try:
        wait_for(lambda: any(d.poll() is not None for d in drivers), None, 180, "one start to stop")
        (loser, lost), (winner, won) = sorted(enumerate(drivers), key=lambda item: item[1].poll() is None)
        said = (tmp_path / f"{loser}.log").read_text()
        assert lost.returncode == 2 and said.count("\n") == 1 and said.startswith("run.py: error: "), said
        assert f"{experiment} already exists" in said
        wait_for(lambda: any(rows(d) for d in trial_dirs(experiment).values()) if screen(experiment).is_dir() else False,
                 won, 240, "the first trial's first epoch")
        won.send_signal(signal.SIGTERM)
        code = finish(won, timeout=120)
    finally:
        for driver in drivers:
            finish(driver, timeout=60)
    log = (tmp_path / f"{winner}.log").read_text()
    assert code == 143 and f"continue with: python sweep/run.py --resume {experiment}" in log, log[-3000:]
    assert "Traceback" not in log and "Stack trace" not in log, log[-3000:]
    assert json.loads((experiment / "sweep.json").read_text())["plan"]["experiment_dir"] == str(experiment)
    assert tune.Tuner.can_restore(str(screen(experiment)))
    statuses = ray_statuses(experiment)
    assert len(statuses) >= 1 and "ERROR" not in statuses.values() and set(statuses.values()) != {"TERMINATED"}


def test_a_full_disk_stops_the_sweep_in_one_line_and_resume_continues(local_ray, tmp_path, capfd):
    """The storage's tmpfs filled to the brim (by another thread) once the first of two trials has finished:
    the sweep stops with one line saying so (exit 2), the finished trial's results are kept; after
    freeing space --resume runs the second trial and leaves the first as it was."""
    from tests.helpers import fill, tmpfs

    with tmpfs(tmp_path / "disk", "64m") as disk:
        experiment = disk / "full"
        filled = threading.Event()

        def fill_once_the_first_trial_finished() -> None:
            # the driver's own record of a trial's results is written as each result arrives; Ray's
            # result.json in the storage path only when Tune next syncs its experiment state
            deadline = time.monotonic() + 240
            records = screen(experiment) / RECORDS_DIR
            while time.monotonic() < deadline:
                kept = sorted(records.glob("*.json")) if records.is_dir() else []
                if any("epochs_run" in row for path in kept for row in read_result_rows(path)):
                    fill(disk)
                    filled.set()
                    return
                time.sleep(0.05)

        filler = threading.Thread(target=fill_once_the_first_trial_finished, daemon=True)
        filler.start()
        # two epochs: the second trial reports twice, and from the fill on it waits before reporting
        code = run.main(["--space", "smoke", "--epochs", "2", "--scheduler", "fifo", "--max-concurrent", "1",
                         "--storage-path", str(disk), "--name", "full"])
        filler.join()
        out, err = capfd.readouterr()
        assert filled.is_set() and code == 2, err[-3000:]
        assert [line for line in err.splitlines() if "error" in line.lower()] == [
            f"run.py: error: no space left on the device of {experiment}: the sweep stopped, and every finished "
            f"trial's results are kept; free space, then continue with: python sweep/run.py --resume "
            f"{experiment}"], err[-3000:]
        assert "Traceback" not in out + err, (out + err)[-3000:]
        first_id = next(iter(trial_dirs(experiment)))
        before = [row for row in load(experiment).epochs.to_dict("records") if row["trial_id"] == first_id]
        assert [row["epoch"] for row in before] == [1, 2]
        (disk / "filler").unlink()
        assert run.main(["--resume", str(experiment)]) == 0
        trials = load(experiment).trials.set_index("trial_id")
        assert len(trials) == 2 and set(trials["stop_reason"]) == {"finished"}, trials["stop_reason"]
        after = [row for row in load(experiment).epochs.to_dict("records") if row["trial_id"] == first_id]
        assert after == before  # finished before the disk filled: not run again


def test_an_error_found_after_ray_started_is_still_one_line(tmp_path, cli_env):
    """--gpus-per-trial 1 on a machine without GPUs can only be checked against the cluster: Ray's own
    warnings (token authentication, "Started a local Ray instance") used to come before our line."""
    proc = subprocess.run([sys.executable, "sweep/run.py", "--space", "smoke", "--gpus-per-trial", "1",
                           "--address", "local", "--storage-path", str(tmp_path / "runs"), "--name", "x"],
                          cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout
    assert proc.stderr == "run.py: error: --gpus-per-trial 1 but the largest node of the Ray cluster has 0 GPU(s)\n", \
        proc.stderr
    assert not (tmp_path / "runs").exists()  # the claim is given back, the storage path it made too


# ------------------------------------------------------------------------------------ faults mid-sweep
def trial_error_lines(console: str) -> list[str]:
    return [line for line in console.splitlines() if line.startswith("run.py: trial ") and " failed: " in line]


def native_noise(console: str) -> list[str]:
    """What a worker that aborts or a trial that raises used to put on the driver's console."""
    return [line for line in console.splitlines()
            if any(word in line for word in ("Traceback", "SIGABRT", "Stack trace", "Fatal Python error",
                                             "Trial task failed", "ERROR tune_controller"))]


def test_sigterm_to_a_trial_s_worker_is_one_line_and_resume_continues_it(local_ray, tmp_path, capfd):
    """SIGTERM to the Ray worker process of a running trial (a node draining, a scheduler's preemption,
    `kill`): before, Ray's remote traceback and the worker's native stack dump (it aborted inside
    torch) filled the console. Now one line names the trial, and --resume continues it from its last
    checkpoint."""
    experiment = tmp_path / "term"
    termed: dict = {}
    scratch = Path(tempfile.gettempdir())
    scratch_before = set(scratch.glob("ablation-trial-*"))
    killer = signal_a_running_worker(experiment, signal.SIGTERM, termed)
    argv = ["--space", "smoke", "--epochs", "3", "--scheduler", "fifo", "--no-confirm",
            "--storage-path", str(tmp_path), "--name", "term"]
    code = run.main(argv)
    killer.join()
    assert termed, "no trial was running when the killer looked"
    console = "".join(capfd.readouterr())
    assert code == 0, console[-3000:]  # the other trial finished; this one is saved as errored (Tune kept it
    assert ray_statuses(experiment)[termed["trial_id"]] == "ERROR"  # RUNNING in its saved state: sweep.tuner)
    # Ray's error says SIGTERM when its raylet saw the signal first, else only that the worker exited
    how = ("it was sent SIGTERM", "it exited or was killed: when memory runs out, the kernel's OOM killer kills it, "
           "see dmesg on its node")
    assert trial_error_lines(console) in ([
        f"run.py: trial train_trial_{termed['trial_id']} failed: its worker process died ({words}); "
        "the epochs it reported are kept"] for words in how), console[-3000:]
    assert not native_noise(console), "\n".join(native_noise(console))
    assert run.main(["--resume", str(experiment), "--max-failures", "1"]) == 0
    results = results_of(experiment)
    assert len(results) == 2 and all(r.metrics["status"] == "finished" and r.metrics["epoch"] == 3 for r in results)
    epochs = load(experiment).epochs.query("trial_id == @termed['trial_id']")["epoch"].tolist()
    assert epochs == [1, 2, 3], epochs  # continued from its checkpoint: no epoch trained twice
    assert set(scratch.glob("ablation-trial-*")) <= scratch_before  # the killed worker removed its scratch too


def test_the_data_folder_deleted_before_the_trials_read_it_then_resume(local_ray, tmp_path, capfd):
    """The image folder moved away once the driver has checked it (sweep.json written), before any trial
    reads it: every screen trial errors, and a confirm phase follows. Each trial is one line with the
    cause (it was Ray's remote traceback per trial), the confirm phase says it did not start, exit 1.
    Its report says every trial errored, and why. With the folder back and the experiment itself moved
    to another directory (its files record absolute paths), --resume --max-failures 1 runs the screen
    and then the confirm phase there, and writes nothing where it was."""
    from tests.helpers import image_folder

    folder = image_folder(tmp_path / "imgs", per_class=12)
    experiment = tmp_path / "gone"

    def move_it_away():
        deadline = time.monotonic() + 120
        while not (experiment / "sweep.json").is_file() and time.monotonic() < deadline:
            time.sleep(0.01)
        folder.rename(tmp_path / "away")

    mover = threading.Thread(target=move_it_away, daemon=True)
    mover.start()
    argv = ["--space", "smoke", "--dataset", f"imagefolder:{folder}", "--set", "subset=0", "val_fraction=0.25",
            "--epochs", "1", "--scheduler", "fifo", "--confirm-top", "1", "--confirm-seeds", "2", "--max-seeds", "2",
            "--storage-path", str(tmp_path), "--name", "gone"]
    assert run.main(argv) == 1
    mover.join()
    console = "".join(capfd.readouterr())
    errors = trial_error_lines(console)
    assert len(errors) == 2 and all(line.endswith(f"failed: imagefolder: {folder} is not a directory")
                                    for line in errors), console[-3000:]
    assert not native_noise(console), "\n".join(native_noise(console))
    assert "run.py: the confirm phase did not start: every trial of screen errored" in console
    assert f"python sweep/run.py --resume {experiment} --max-failures 1" in console
    assert not (experiment / "confirm").exists()
    # issue 37, class 7: its report (no trial reported an epoch) was a KeyError traceback
    assert report_main([str(experiment), "--out", str(tmp_path / "errored-report")]) == 0
    report = (tmp_path / "errored-report" / "report.md").read_text()
    assert "2 trials recorded of 2 expected: 2 errored" in report and "is not a directory" in report
    assert "Traceback" not in "".join(capfd.readouterr())
    (tmp_path / "away").rename(folder)
    moved = tmp_path / "moved" / "gone"
    moved.parent.mkdir()
    experiment.rename(moved)
    assert run.main(["--resume", str(moved), "--max-failures", "1"]) == 0
    assert not experiment.exists()
    trials = load(moved).trials
    expected = json.loads((moved / "sweep.json").read_text())["phases"]["confirm"]["expected_trials"]
    assert (trials["phase"] == "confirm").sum() == expected >= 2 and set(trials["stop_reason"]) == {"finished"}


def test_a_second_driver_of_a_running_experiment_is_refused_and_a_killed_one_holds_nothing(tmp_path, cli_env,
                                                                                           capsys):
    """Issue 27, class 7: a --resume or a --confirm of an experiment another driver is running were not
    refused (two drivers restoring one Ray Tune state, writing one sweep.json). Now one line each,
    exit 2, nothing written; once that driver is SIGKILLed the kernel has let go of it, and --resume
    finishes the sweep."""
    experiment = tmp_path / "busy"
    argv = ["--space", "smoke", "--epochs", "3", "--scheduler", "fifo", "--max-concurrent", "1", "--no-confirm",
            "--storage-path", str(tmp_path), "--name", "busy"]
    driver = launch(tmp_path / "first.log", cli_env, *argv)
    try:
        wait_for(lambda: any(rows(d) for d in trial_dirs(experiment).values()) if screen(experiment).is_dir() else False,
                 driver, 240, "the first trial's first epoch")
        before = (experiment / "sweep.json").read_text()
        for flag in ("--resume", "--confirm"):
            assert run.main([flag, str(experiment)]) == 2
            err = capsys.readouterr().err
            assert err == (f"run.py: error: {experiment} is being run by another sweep/run.py (a start, --resume or "
                           "--confirm of it that has not ended): wait for it to end, or stop it, then --resume "
                           f"{experiment}\n"), err
        assert (experiment / "sweep.json").read_text() == before
        os.killpg(driver.pid, signal.SIGKILL)
    finally:
        finish(driver, timeout=60)
    resumed = launch(tmp_path / "second.log", cli_env, "--resume", str(experiment))
    assert finish(resumed, timeout=300) == 0, (tmp_path / "second.log").read_text()[-3000:]
    assert set(ray_statuses(experiment).values()) == {"TERMINATED"}
