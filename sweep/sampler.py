"""Optuna's NSGA-II sampler in a form Ray Tune can save.

Ray Tune pickles the searcher into the experiment's state (tuner.pkl) and its checkpoints. Since
Optuna 5.1 a genetic sampler holds a threading.Lock (optuna/samplers/_ga/_base.py), which cannot be
pickled, so a multi-objective sweep failed as it started ("cannot pickle '_thread.lock' object"). This
subclass leaves the lock out of its pickled state and makes a new one when it is loaded: the lock
guards a cache, not the search's state, which lives in the study.
"""

from __future__ import annotations

import threading
from typing import Any

from optuna.samplers import NSGAIISampler as _OptunaNSGAII

_LOCK = type(threading.Lock())


class NSGAIISampler(_OptunaNSGAII):
    """optuna.samplers.NSGAIISampler that pickles. It keeps Optuna's class name on purpose: a genetic
    sampler keys its generation records in the study by its class name (BaseGASampler.__init_subclass__),
    so a study written by this sampler reads the same as one written by Optuna's."""

    def __getstate__(self) -> dict[str, Any]:
        locks = [name for name, value in self.__dict__.items() if isinstance(value, _LOCK)]
        state = {name: value for name, value in self.__dict__.items() if name not in locks}
        return {**state, "_unpickled_locks": locks}

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        for name in state.pop("_unpickled_locks", []):
            state[name] = threading.Lock()
        self.__dict__.update(state)
