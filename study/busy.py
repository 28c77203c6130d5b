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
    this process's own (os.times). `share` is None where /proc/stat cannot be read."""

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
    times = os.times()
    return times.user + times.system
