"""A multi-objective front's latency measured with the machine to itself: the latency a trial
measured while other trials shared the machine, measured again after the sweep, one model at a
time, and kept at RUN_DIR/latency_alone.json (study.layout.LATENCY_FILE) for the report and the
export's --front.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
from pathlib import Path

import torch

from deploy.choose import Source, build_model, newest_checkpoint, number_or_none
from study import layout
from study.busy import OtherLoad
from study.files import write_text_atomically
from study.front import front
from study.load import load
from study.states import completed

BATCHES = (1, 32)  # latency batch sizes


def latency_alone(model: torch.nn.Module, image_shape: tuple[int, int, int], threads: int,
                  repeats: int) -> dict[str, float]:
    """Median PyTorch eager latency (ms) at each of BATCHES, in this process, on the CPU, with
    `threads` threads, after warm-up (training.metrics.measure_latency_ms, as a trial measures it):
    the figure a trial measured while other trials shared the machine, measured with the machine to
    itself."""
    from training.metrics import measure_latency_ms

    torch.set_num_threads(threads)
    cpu = torch.device("cpu")
    return {f"latency_ms_b{batch}": measure_latency_ms(model, image_shape, batch, cpu, repeats,
                                                       contextlib.nullcontext())
            for batch in BATCHES}


def remeasure_front(run_dir: Path, objectives: list[list[str]], threads: int = 1, repeats: int = 20) -> dict:
    """After a multi-objective sweep: the latency of the front's models (of every trial that ran to
    its end when a latency is an objective, so the front can be drawn again from these figures),
    measured alone, one model at a time; written to RUN_DIR/latency_alone.json and returned."""
    from training.datasets import load_dataset

    finished = completed(load(run_dir).trials)[0]
    latency_objective = any(metric.startswith("latency_ms") for metric, _ in objectives)
    chosen = finished if latency_objective else finished[front(finished, objectives).to_numpy()]
    classes: dict[tuple[str, str], int] = {}
    measured, loads = {}, []
    for row in chosen.itertuples():
        cfg = layout.read_trial_config(run_dir / row.trial_dir / layout.TRIAL_CONFIG_FILE)
        key = (cfg.dataset, cfg.resolved_data_dir)
        if key not in classes:
            classes[key] = load_dataset(cfg.dataset, cfg.resolved_data_dir, cfg.image_size).num_classes
        source = Source(row.trial_id, cfg, newest_checkpoint(run_dir / row.trial_dir), number_or_none(row.test_acc))
        model = build_model(source, classes[key])
        with OtherLoad() as other:
            measured[row.trial_id] = latency_alone(model, (3, cfg.image_size, cfg.image_size), threads, repeats)
        loads.append(other.share)
    known = [share for share in loads if share is not None]
    alone = {"threads": threads, "repeats": repeats, "machine": machine(), "device": "cpu",
             "other_load": max(known) if known else None,  # the busiest of the models' timing windows
             "which": "every trial that ran to its end" if latency_objective else "the front's trials",
             "trials": measured}
    write_text_atomically(run_dir / layout.LATENCY_FILE, json.dumps(alone, indent=2))
    return alone


def machine() -> str:
    from training.metrics import cpu_model

    return f"{cpu_model()}, {os.cpu_count()} logical CPUs, {platform.system()}"
