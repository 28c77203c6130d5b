"""A phase's plan: everything a Tuner needs, as plain data (what sweep.json stores, so --resume can
rebuild it), and the check of a recorded one.
"""
from __future__ import annotations

import math
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from study.config import UserError
from study.layout import CONFIRM
from sweep import vocabulary as vocab


@dataclass
class Plan:
    """Everything a Tuner needs, as plain data (what sweep.json stores, so --resume can rebuild it)."""
    experiment_dir: str  # storage_path/name: a local directory or a URI Ray supports
    search: str
    scheduler: str
    num_samples: int
    max_t: int  # most epochs any trial runs (ASHA/HyperBand's max_t)
    grace_period: int
    reduction_factor: float
    cpus_per_trial: float
    gpus_per_trial: float
    max_concurrent: int | None
    max_failures: int
    search_seed: int
    smoke: bool = False  # --smoke-test: per-trial limits in the trainable
    objectives: list[list[str]] | None = None  # [[metric, min|max], ...]: a multi-objective search
    phase_dir: str = ""  # the phase's directory under experiment_dir ("" before phases: the root)
    # the arms in the order they start, each with every seed of its grid: the confirm phase's, or an
    # asynchronous grid screen's shuffled arms (launch_order)
    points: list[dict[str, Any]] | None = field(default=None)
    test_shown: bool = True  # False for a screen that a confirm phase follows: it shows validation only
    # a successive-halving rung's budget in epochs (of max_t): each trial's schedule is fitted to
    # budget / max_t of its length (study.trial.fit_to_budget); 0: every trial's whole schedule
    budget: int = 0
    # --trial-timeout: seconds a running trial may go without reporting an epoch before the sweep stops it
    trial_timeout: float | None = None
    # the sweep's estimate (sweep.estimate) of this phase's seconds and of the phases after it, for the
    # console's ETA of the whole sweep; 0: not known (a confirm phase's later looks)
    estimated_s: float = 0.0
    later_s: float = 0.0

    @classmethod
    def from_record(cls, recorded: Mapping[str, Any], where: str) -> "Plan":
        """The plan sweep.json recorded (`where`: the file, for the error), each field checked for
        the type it is declared with (a number where a number belongs, a known search and scheduler):
        a UserError naming the field, instead of a TypeError where the driver first compares it."""
        hints = typing.get_type_hints(cls)
        unknown = [k for k in recorded if k not in hints]
        if unknown:
            raise UserError(f"{where} does not hold a plan this version can read (unknown field {unknown[0]!r})")
        for f in fields(cls):
            if f.name not in recorded:
                continue
            value, hint = recorded[f.name], hints[f.name]
            allowed = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, type(int | None)) else (hint,)

            def fits(kind: Any) -> bool:
                if kind is type(None):
                    return value is None
                if isinstance(value, bool):
                    return kind is bool
                if kind is float:
                    return isinstance(value, (int, float)) and math.isfinite(value)
                return isinstance(value, typing.get_origin(kind) or kind)

            if not any(fits(kind) for kind in allowed):
                words = {int: "a whole number", float: "a number", str: "text", bool: "true or false", list: "a list",
                         type(None): "null"}
                wanted = " or ".join(words.get(typing.get_origin(k) or k, str(k)) for k in allowed)
                raise UserError(f"{where}: plan.{f.name} is {value!r}, not {wanted}")
        for name, known in (("search", vocab.SEARCHES), ("scheduler", vocab.SCHEDULERS)):
            if name in recorded and recorded[name] not in known:
                raise UserError(f"{where}: plan.{name} is {recorded[name]!r}, not one of {', '.join(known)}")
        try:
            return cls(**recorded)
        except TypeError as exc:  # a field this version needs is missing
            raise UserError(f"{where} does not hold a plan this version can read ({exc})") from None

    @property
    def fraction(self) -> float:
        """The share of its schedule each trial of this phase runs (1 unless a rung's budget is set)."""
        return min(1.0, self.budget / self.max_t) if self.budget else 1.0

    @property
    def tune_dir(self) -> str:
        """The phase's Ray Tune experiment directory."""
        return f"{self.experiment_dir.rstrip('/')}/{self.phase_dir}" if self.phase_dir else self.experiment_dir

    @property
    def confirms(self) -> bool:
        """Whether this is a confirm phase (``confirm``, ``confirm-N``), not the screen or one of its rungs."""
        return self.phase_dir.startswith(CONFIRM)

    @property
    def storage_path(self) -> str:
        return self.tune_dir.rstrip("/").rsplit("/", 1)[0]

    @property
    def name(self) -> str:
        return self.tune_dir.rstrip("/").rsplit("/", 1)[1]

    @property
    def experiment_name(self) -> str:
        return self.experiment_dir.rstrip("/").rsplit("/", 1)[1]
