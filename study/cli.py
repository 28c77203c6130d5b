"""What every CLI of the project (train.py, sweep/run.py, analysis.report, deploy.export) shares: a
bad flag is one line and exit status 2, like every other input error (study.config.UserError); a
reader that leaves early (``... | head``) ends the writer with a pipe's status, silently; ``--set
KEY=VALUE`` reads alike in train.py and sweep/run.py; a length of time reads alike everywhere
(:func:`duration`).
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
import unicodedata
from typing import Any

from study.config import UserError


class Parser(argparse.ArgumentParser):
    """Every CLI's argument parser: a bad flag is one line and exit status 2, like every other input
    error (argparse would print the whole usage first)."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message}\n")


def finite_float(text: str) -> float:
    """argparse's type for a numeric flag: a finite number (float() takes 'nan' and 'inf', which no
    flag means; one ran as if valid, another ended in an assertion inside Ray)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


UNITS = {"": 1, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def seconds(text: str) -> float:
    """argparse's type for a length of time: seconds ('90'), or a number with a unit: '90s', '10m',
    '1.5h', '2d'; more than 0."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(s|m|min|h|d)?\s*", text.lower())
    if not match or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a length of time (seconds, or with a unit: 90s, 10m, "
                                         "1.5h, 2d), more than 0")
    return float(match[1]) * UNITS[match[2] or ""]


def printable(value: str, what: str) -> str:
    """`value`, when it holds no control or format character (a newline, a tab, a terminal escape, a
    bidirectional override): a name reaches directory names, logs and the terminal as it is, where
    such a character splits a log line, moves the cursor or hides what follows. A UserError naming
    `what` and the first such character otherwise."""
    bad = next((c for c in value if unicodedata.category(c) in ("Cc", "Cf")), None)
    if bad is not None:
        raise UserError(f"{what} {value!r} holds the control character {bad!r}: a name goes into directory "
                        "names, logs and the terminal as it is")
    return value


def run_cli(main) -> None:
    """``sys.exit(main())`` for every CLI; when the reader of its output has gone (``... | head``),
    the exit status of a pipe's writer, 141, without a traceback."""
    try:
        status = main()
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        status = 141
    sys.exit(status)


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE ...`` as {key: value} (values stay text: the schema coerces them), a dash in
    a key read as an underscore, as in the flags."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set takes KEY=VALUE, got {item!r}")
        out[key.replace("-", "_")] = value
    return out


def shown(path: str | os.PathLike) -> str:
    """A path as the console prints it for the user to copy: relative to the working directory when
    it lies below it (runs/sweeps/NAME, the default storage), else as it is (a URI, /tmp/...)."""
    text = str(path)
    if "://" in text or not os.path.isabs(text):
        return text
    try:
        relative = os.path.relpath(text)
    except ValueError:  # another drive
        return text
    return text if relative.startswith("..") else relative


def duration(seconds: float) -> str:
    """A length of time as every console line gives it (elapsed, ETA, estimates): '40 s', '1 min 05 s'
    under two minutes, then '12 min', then '3 h 05 min'."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 120:
        return f"1 min {seconds - 60:02d} s"
    if seconds < 3600:
        return f"{round(seconds / 60)} min"
    return f"{seconds // 3600} h {seconds // 60 % 60:02d} min"
