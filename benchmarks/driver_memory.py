"""Driver memory over a long sweep: does the sweep driver's resident memory stay flat as trials pile up?

The sweep CLI runs the smoke space with N/2 seeds per arm (N trials, default 100; 1 epoch of 16x16
synthetic images each, FIFO) as a subprocess on a private local Ray. Every --interval seconds this
script samples the driver's RSS (psutil, i.e. /proc/PID/status VmRSS) and counts the trials that have
reported their one epoch. It prints the RSS after trial 10, 50 and 100 and the slope: a least-squares
line through the median RSS at each count of finished trials, from trial 10 on, in KiB per trial.
Ray's GCS and raylet, which hold the cluster's state, and the largest trial worker process (reused
from trial to trial) are sampled too, as context.

    python benchmarks/driver_memory.py --quick          # 6 trials, for a smoke run
    python benchmarks/driver_memory.py --max-load 1.5 --out benchmarks/results/cpu-driver-memory.json
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import from the repository root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import numpy as np  # noqa: E402
import psutil  # noqa: E402  (installed with ray)
import torch  # noqa: E402

from benchmarks import common  # noqa: E402

MIB = 2**20
RAY_DAEMONS = ("gcs_server", "raylet")  # the cluster's state lives here, not in the driver
TRIAL_WORKER = "ray::ImplicitFunc"  # the actor process that runs trials (reused: reuse_actors=True)


def sweep_command(trials: int, storage: str) -> list[str]:
    return [sys.executable, "sweep/run.py", "--space", "smoke", "--samples", str(trials // 2), "--epochs", "1",
            "--set", "image_size=16", "--scheduler", "fifo", "--address", "local",
            "--storage-path", storage, "--name", "memory"]


class FinishedTrials:
    """Counts the trials that have reported their one epoch: the worker writes that report's checkpoint
    straight into the trial directory (result.json reaches the storage path only when the driver syncs
    it, seconds later)."""

    def __init__(self, experiment: Path) -> None:
        self.experiment = experiment

    def count(self) -> int:
        return len(list(self.experiment.glob("*/checkpoint_000000"))) if self.experiment.is_dir() else 0


def rss_mib(pid: int) -> dict[str, float]:
    """RSS in MiB of the driver and of Ray's daemons among its descendants."""
    driver = psutil.Process(pid)
    out = {"driver": driver.memory_info().rss / MIB}
    for child in driver.children(recursive=True):
        try:
            name, rss = child.name(), child.memory_info().rss / MIB
        except psutil.Error:
            continue
        if name in RAY_DAEMONS:
            out[name] = out.get(name, 0.0) + rss
        elif name.startswith(TRIAL_WORKER):
            out["worker_max"] = max(out.get("worker_max", 0.0), rss)
    return out


def sample(trials: int, interval: float, storage: str) -> tuple[list[dict], int, float]:
    """Run the sweep, sampling until it exits: (samples, exit status, wall seconds)."""
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # a private Ray on 127.0.0.1
    log = Path(storage, "sweep.log")
    with log.open("w") as out:
        driver = subprocess.Popen(sweep_command(trials, storage), cwd=common.REPO, env=env, stdout=out,
                                  stderr=subprocess.STDOUT)
    finished, samples, start = FinishedTrials(Path(storage, "memory")), [], time.monotonic()
    try:
        while driver.poll() is None:
            try:
                memory = rss_mib(driver.pid)
            except psutil.Error:  # the driver is exiting
                break
            samples.append({"t": time.monotonic() - start, "finished": finished.count(), **memory})
            time.sleep(interval)
    finally:
        if driver.poll() is None:
            driver.wait()
    if driver.returncode != 0:
        print(log.read_text()[-3000:], file=sys.stderr)
    return samples, driver.returncode, time.monotonic() - start


def at_trial(samples: list[dict], n: int) -> dict | None:
    """The first sample taken once `n` trials had finished."""
    return next((s for s in samples if s["finished"] >= n), None)


def slope_kib_per_trial(samples: list[dict], key: str, first: int) -> float:
    """Least-squares slope of `key` (MiB) against finished trials, from trial `first` on, in KiB/trial:
    one point per count of finished trials (the median of its samples), so the seconds the driver spends
    summarising after the last trial weigh as much as any other trial."""
    counts = sorted({s["finished"] for s in samples if s["finished"] >= first})
    if len(counts) < 2:
        return float("nan")
    y = [float(np.median([s[key] for s in samples if s["finished"] == n and key in s] or [np.nan]))
         for n in counts]
    x, y = np.array(counts, dtype=float), np.array(y)
    keep = ~np.isnan(y)
    return float(np.polyfit(x[keep], y[keep], 1)[0] * 1024) if keep.sum() >= 2 else float("nan")


def by_trial(samples: list[dict]) -> dict[int, list[float]]:
    """Finished trials -> [min, max] driver RSS (MiB) seen while that many had finished."""
    out: dict[int, list[float]] = {}
    for s in samples:
        low, high = out.get(s["finished"], [s["driver"], s["driver"]])
        out[s["finished"]] = [round(min(low, s["driver"]), 1), round(max(high, s["driver"]), 1)]
    return out


def main() -> None:
    p = common.make_parser(__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=100, help="trials in the sweep (even: 2 arms x seeds)")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between RSS samples")
    args = p.parse_args()
    trials = 6 if args.quick else args.trials
    if trials < 2 or trials % 2:
        raise SystemExit("driver_memory.py: error: --trials must be an even number >= 2")
    device = common.setup(args)
    marks = [trials // 3, 2 * trials // 3, trials] if args.quick else [10, 50, 100]
    marks = [m for m in marks if m <= trials] or [trials]
    with tempfile.TemporaryDirectory(prefix="driver-memory-") as storage:
        samples, status, wall = sample(trials, args.interval, storage)
    if status != 0 or not samples:
        raise SystemExit(f"driver_memory.py: the sweep failed (exit {status})")
    rows = []
    for n in marks:
        s = at_trial(samples, n) or samples[-1]
        rows.append({"after_trial": n, "finished": s["finished"], "elapsed_s": s["t"],
                     "driver_rss_mib": s["driver"],
                     **{f"{k}_rss_mib": s.get(k, float("nan")) for k in (*RAY_DAEMONS, "worker_max")}})
    first = marks[0]
    extra = {"trials": trials, "wall_s": round(wall, 1), "samples": len(samples),
             "driver_rss_mib_peak": round(max(s["driver"] for s in samples), 1),
             "slope_kib_per_trial": {k: round(slope_kib_per_trial(samples, k, first), 1)
                                     for k in ("driver", *RAY_DAEMONS, "worker_max")},
             "slope_from_trial": first, "command": " ".join(sweep_command(trials, "STORAGE")[1:]),
             "driver_rss_mib_by_trial": by_trial(samples)}
    settings = {"trials": trials, "interval_s": args.interval, "torch_threads": torch.get_num_threads()}
    common.finish(args, device, "driver_memory", settings, rows, extra)
    slopes = extra["slope_kib_per_trial"]
    print(f"# {trials} trials in {wall:.0f} s; driver RSS peak {extra['driver_rss_mib_peak']} MiB; slope from "
          f"trial {first}: driver {slopes['driver']} KiB/trial, "
          + ", ".join(f"{k} {slopes[k]} KiB/trial" for k in (*RAY_DAEMONS, "worker_max")))


if __name__ == "__main__":
    main()
