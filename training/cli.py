"""What every CLI of the project (train.py, sweep/run.py, analysis.report, deploy.export) shares: a
bad flag is one line and exit status 2, like every other input error (training.config.UserError),
and a reader that leaves early (``... | head``) ends the writer with a pipe's status, silently.
"""
from __future__ import annotations

import argparse
import math
import os
import sys


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
