"""How busy the machine is with other work: the share of its CPU time other processes use while a
block runs. Measured while the export times latency (deploy) and while the dry run's probe times
training (sweep.estimate), both of which other work inflates; said when above BUSY_SHARE."""
from __future__ import annotations

import os
import time
from pathlib import Path

# Other processes' share of the machine's CPU time above which a timing is said to be inflated.
BUSY_SHARE = 0.10


class OtherLoad:
    """The share of the machine's CPU time that other processes used while the block ran (0: the
    machine was ours; 1: every CPU busy with other work): the CPUs' busy time from /proc/stat less
    this process's own and its descendants' (a local Ray the driver started: its daemons and workers
    are the sweep's, not other work). `share` is None where /proc/stat cannot be read."""

    def __enter__(self) -> "OtherLoad":
        self.share: float | None = None
        self._start = (busy_seconds(), own_seconds(), time.monotonic())
        return self

    def __exit__(self, *exc) -> None:
        busy, own, start = busy_seconds(), own_seconds(), time.monotonic()
        if busy is None or self._start[0] is None or start - self._start[2] <= 0:
            return
        others = (busy - self._start[0]) - (own - self._start[1])
        self.share = max(0.0, others / ((start - self._start[2]) * (os.cpu_count() or 1)))

    @property
    def busy(self) -> bool:
        return self.share is not None and self.share > BUSY_SHARE

    def note(self, what: str = "the latency was timed", advice: str = "so these latencies are inflated; time them "
             "again on an idle machine") -> str:
        """'' on a quiet machine, else a sentence that what was timed is inflated."""
        if not self.busy:
            return ""
        return f"the machine was busy: other processes used {self.share:.0%} of its CPU time while {what}, {advice}"


def busy_seconds() -> float | None:
    """CPU seconds every CPU has spent busy since boot (/proc/stat's first line: all but idle and iowait)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_seconds() -> float:
    """CPU seconds of this process, its waited-for children and every living descendant (/proc)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system + descendants_seconds()


def descendants_seconds() -> float:
    """CPU seconds of this process's living descendants, and of the children they waited for."""
    parents: dict[int, list[int]] = {}
    used: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:  # gone meanwhile
            continue
        pid = int(entry.name)
        parents.setdefault(int(fields[1]), []).append(pid)  # field 4, ppid (fields start at 3, the state)
        used[pid] = sum(int(v) for v in fields[11:15]) / tick  # utime, stime, cutime, cstime
    total, stack = 0.0, list(parents.get(os.getpid(), []))
    while stack:
        pid = stack.pop()
        total += used.get(pid, 0.0)
        stack += parents.get(pid, [])
    return total
