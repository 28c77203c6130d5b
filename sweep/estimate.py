"""What a sweep will cost in wall time, before anything of it runs, from a short measured probe.

The probe trains the arm with the most forward FLOPs and the one with the fewest for a few steps on
this machine (random images of the dataset's size through the trial's own loader, augmentation,
model, loss and optimiser, with the torch threads a trial gets), and times inference at the
evaluation batch size. An arm's seconds per image are interpolated linearly in FLOPs between the two
(one probe when all arms have the same FLOPs). A trial's time is then

    start + epochs x (train images x train s/img + validation images x eval s/img)
          + test images x eval s/img + latency passes

with `start` the measured cost of starting one trial on Ray (TRIAL_START_S), the test pass only where
the trial runs it (not in a screen a confirm phase follows), the latency timing where it is on
(training.metrics.measure_latency_ms: 21 passes of one image, 4 of 256, the one-image pass probed too),
and a phase's wall
time PHASE_START_S plus the makespan of its trials over the trial slots (longest trial first onto the freest slot, as
Tune fills free slots). Later rungs and the confirm phase train arms not known yet: they take the
mean arm's time, at most as many trials as planned; the confirm phase, whose arms are known only
once the screen has ranked them (between K and phases.confirm_bound, as the best arm's leave-one-out
neighbours fall among the top K or not), the middle of that range, for the trials and looks its design
takes on average when no arm differs from the best (study.questions.simulated_design, each look a
phase of its own), and, as the upper bound the line gives beside, every possible arm to the cap (a
look per seed after the first). Schedulers that stop trials early (ASHA,
HyperBand, the median rule) are priced as if every trial ran to its end: an upper bound.

It prices the trials on *this* machine: a cluster with other nodes or a GPU the driver lacks runs at
another speed (the estimate says which device it measured). It assumes the machine is the sweep's:
the share of its CPU time other processes used during the probe is measured (study.busy, as the
export does while timing latency) and, above study.busy.BUSY_SHARE, the line says so with the wall
time at that load (the trials then share the CPUs with it: about 1 / (1 - share) times longer).
Measured against real sweeps:
docs/PERFORMANCE.md ("The dry run's estimate").
"""
from __future__ import annotations

import functools
import heapq
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from study.busy import BUSY_SHARE, OtherLoad
from study.cli import duration
from study.config import TrainConfig

# A trial's fixed cost on Ray beyond its epochs and final passes (Tune reuses a phase's actors, so
# little), and each phase's (a Tuner set up, its actors started, the summary read back, a look's
# questions assessed). Measured on the 2-core AMD EPYC with the README's 48-arm Fashion-MNIST
# ablation (docs/PERFORMANCE.md, "The dry run's estimate"): its 24 waves of two first-rung trials took
# 90 s, their mean time_total_s 3.77 s (so well under a second a trial beyond it); a confirm look of
# two 7.4 s trials took 11 s from its first table to its summary, about 5 s a phase beyond its trials.
# (On the Intel machine, before, 2 s and 10 s, when each confirm phase ran once.)
TRIAL_START_S = 0.5
PHASE_START_S = 5.0
LONG_S = 3600.0  # an estimate above this suggests cheaper first runs (sweep/run.py)
PROBE_STEPS = 3  # timed training steps after one warm-up step
PROBE_BATCH = 64  # at most this many images a probe step (seconds per image change little above it on a CPU)


@dataclass(frozen=True)
class Probe:
    """One arm's measured seconds per image on this machine."""
    flops: int
    train_s: float  # per training image: loader, augmentation, forward, backward, optimiser step
    eval_s: float  # per evaluated image: forward only, at the evaluation batch size
    single_s: float = 0.0  # one forward pass of a single image (the latency timing's batch 1)


@dataclass(frozen=True)
class Estimate:
    seconds: float  # the whole sweep's wall time
    phases: list[tuple[str, float]]  # (phase, seconds)
    slots: int  # trials at once
    device: str  # what the probe ran on: 'cpu (1 thread)', 'cuda (NVIDIA H200)'
    probed: int  # arms probed
    other_load: float | None = None  # the share of the CPUs' time other processes used during the probe
    cap_s: float = 0.0  # the whole sweep with every possible confirm arm taken to the cap (0: no more than expected)

    def line(self) -> str:
        parts = ", ".join(f"{name} {duration(s)}" for name, s in self.phases)
        text = (f"estimated wall time: ~{duration(self.seconds)} ({parts}) with {self.slots} trial(s) at once, from a "
                f"probe of {self.probed} arm(s) on this machine's {self.device}")
        if self.cap_s > self.seconds:
            text += f"; up to ~{duration(self.cap_s)} if every possible confirm arm is taken and runs to the cap"
        if self.other_load is not None and self.other_load > BUSY_SHARE:
            loaded = self.seconds / max(1.0 - self.other_load, 0.05)
            text += (f"; the machine is busy: other processes used {self.other_load:.0%} of its CPU time during the "
                     f"probe, and while they run the sweep shares the CPUs with them (~{duration(loaded)} at that "
                     "load)")
        return text


def model_flops(cfg: TrainConfig, classes: int) -> int:
    """Forward FLOPs of one image, counted on PyTorch's meta device (no memory, no weights); once per
    architecture (about 0.2 s each)."""
    from sweep.vocabulary import architecture

    return _flops(architecture(cfg, keep=("image_size", "dataset")), classes)


@functools.lru_cache(maxsize=None)
def _flops(cfg: TrainConfig, classes: int) -> int:
    from training.metrics import count_flops
    from training.preflight import meta_model, probe_input

    model = meta_model(cfg, classes)
    return count_flops(model, (3, cfg.image_size, cfg.image_size), probe_input(model, cfg).device)


def probe(cfg: TrainConfig, classes: int, threads: int) -> Probe:
    """Seconds per training and per evaluated image of `cfg` on this machine (module docstring)."""
    from models import create_model
    from training.datasets import NORMALIZATION
    from training.loader import DeviceLoader
    from training.loop import resolve_device, resolve_precision
    from training.metrics import sync
    from training.optim import build_optimizer

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, cfg.threads or threads))
    try:
        device = resolve_device(cfg.device)
        autocast, scaler, _ = resolve_precision(cfg.precision, device)
        bare = cfg.replace(pretrained=False, fresh_stem=False, init_from="")
        torch.manual_seed(0)
        model = create_model(bare, classes).to(device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = build_optimizer(cfg, model, device)
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        batch = min(cfg.batch_size, PROBE_BATCH)
        generator = torch.Generator(device=device).manual_seed(0)
        images = torch.randint(0, 256, (batch * (PROBE_STEPS + 1), 3, cfg.image_size, cfg.image_size),
                               dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        labels = torch.randint(0, classes, (len(images),), generator=torch.Generator().manual_seed(1))
        mean, std = NORMALIZATION.get(cfg.dataset, ((0.5,) * 3, (0.25,) * 3))
        loader = DeviceLoader(images, labels, batch_size=batch, mean=mean, std=std, device=device,
                              augment=cfg.augment, shuffle=True, drop_last=True, channels_last=cfg.channels_last)
        model.train()
        times = []
        sync(device)
        start = time.perf_counter()
        for x, y in loader.batches(generator):  # the first step warms up (allocator, kernels)
            with autocast:
                loss = loss_fn(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            sync(device)
            now = time.perf_counter()
            times.append(now - start)
            start = now
        train_s = sorted(times[1:])[len(times[1:]) // 2] / batch
        model.eval()
        x = torch.randn(min(cfg.eval_batch_size, 4 * PROBE_BATCH), 3, cfg.image_size, cfg.image_size, device=device)
        with torch.no_grad(), autocast:
            model(x)
            sync(device)
            start = time.perf_counter()
            model(x)
            sync(device)
            eval_s = (time.perf_counter() - start) / len(x)
            start = time.perf_counter()
            model(x[:1])
            sync(device)
            single_s = time.perf_counter() - start
        return Probe(model_flops(cfg, classes), train_s, eval_s, single_s)
    finally:
        torch.set_num_threads(before)


class Prices:
    """Seconds per image of any arm, from the probes of the arms with the most and fewest FLOPs."""

    def __init__(self, configs: Sequence[TrainConfig], classes: dict[str, int], threads: int) -> None:
        flops = {cfg: model_flops(cfg, classes[cfg.dataset]) for cfg in configs}
        ends = list(dict.fromkeys([max(configs, key=flops.get), min(configs, key=flops.get)]))
        if len(ends) == 2 and flops[ends[0]] == flops[ends[1]]:
            ends = ends[:1]
        with OtherLoad() as load:
            self.probes = [probe(cfg, classes[cfg.dataset], threads) for cfg in ends]
        self.other_load = load.share

    def per_image(self, cfg: TrainConfig, classes: int) -> tuple[float, float, float]:
        """(train, eval, single-image forward) seconds per image of `cfg`."""
        flops = model_flops(cfg, classes)  # counted once per architecture
        if len(self.probes) == 1:
            p = self.probes[0]
            return p.train_s, p.eval_s, p.single_s
        hi, lo = self.probes
        share = (flops - lo.flops) / (hi.flops - lo.flops)
        return tuple(max(getattr(lo, k) + share * (getattr(hi, k) - getattr(lo, k)), 0.0)
                     for k in ("train_s", "eval_s", "single_s"))


LATENCY_PASSES = ((1, 20 + 1), (256, 3 + 1))  # (batch, passes with the warm-up): training.loop's latency timing


def trial_seconds(cfg: TrainConfig, sizes: Any, prices: Prices, tested: bool = True) -> float:
    """One trial's wall time from its images and epochs (module docstring); not `tested`: a screen a
    confirm phase follows, which skips the test pass and the latency timing (sweep.trainable)."""
    from training.loader import split_sizes

    n_fit, n_val = split_sizes(sizes.train, cfg.val_fraction, cfg.subset)
    train_images = (n_fit // cfg.batch_size) * cfg.batch_size if n_fit >= cfg.batch_size else n_fit
    train_s, eval_s, single_s = prices.per_image(cfg, sizes.classes)
    epochs = cfg.epochs + cfg.finetune_epochs
    seconds = TRIAL_START_S + epochs * (train_images * train_s + n_val * eval_s)
    if tested and cfg.evaluate_test:
        seconds += sizes.test * eval_s
    if tested and cfg.measure_latency:
        seconds += sum(passes * (single_s if batch == 1 else batch * eval_s) for batch, passes in LATENCY_PASSES)
    return seconds


def makespan(durations: Sequence[float], slots: int) -> float:
    """Wall time of `durations` run `slots` at a time, longest first onto the slot free first."""
    free = [0.0] * max(1, slots)
    for d in sorted(durations, reverse=True):
        heapq.heappush(free, heapq.heappop(free) + d)
    return max(free)


def trial_slots(nodes: Sequence[dict[str, float]], cpus_per_trial: float, gpus_per_trial: float,
                max_concurrent: int | None) -> int:
    """Trials that run at once: per node (Ray's resources: {"CPU": n, "GPU": m}), its CPUs (and GPUs)
    over a trial's share; at least one, at most `max_concurrent`."""
    slots = 0
    for node in nodes:
        fits = math.floor(node.get("CPU", 0) / cpus_per_trial) if cpus_per_trial > 0 else 1
        if gpus_per_trial:
            fits = min(fits, math.floor(node.get("GPU", 0) / gpus_per_trial))
        slots += fits
    slots = max(slots, 1)
    return min(slots, max_concurrent) if max_concurrent else slots


def local_slots(cpus_per_trial: float, gpus_per_trial: float, max_concurrent: int | None) -> int:
    """trial_slots of this machine alone (a dry run: no Ray started); GPUs count only where it has
    some (without, the sweep itself refuses --gpus-per-trial: the dry run prices the CPUs)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    gpus = torch.cuda.device_count()
    return trial_slots([{"CPU": cpus, "GPU": gpus}], cpus_per_trial, gpus_per_trial if gpus else 0.0,
                       max_concurrent)


def device_words(threads: int) -> str:
    from training.loop import resolve_device

    device = resolve_device("auto")
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"{device.type} ({threads} thread{'s' if threads != 1 else ''}; no GPU)"


def estimate_sweep(params: dict[str, Any], plan: Any, record: dict[str, Any], slots: int) -> Estimate:
    """The wall time of the sweep `plan_sweep` planned (sweep.planning.screen), its trials `slots` at a time."""
    from study.layout import CONFIRM, SCREEN
    from study.questions import simulated_design
    from study.selection import rung_keeps
    from sweep.planning import phases
    from sweep.planning.configs import check_trials
    from training.datasets import dataset_sizes

    grid = plan.search == "grid"
    seeds = phases.seeds_per_arm(params) if grid else 1
    rungs = record["phases"][SCREEN].get("rungs") or [{"budget": plan.max_t}]
    screen = check_trials(params, plan.smoke, grid, record["space_name"])
    sizes = {name: dataset_sizes(name) for name in {cfg.dataset for cfg in screen}}
    classes = {name: s.classes for name, s in sizes.items()}
    threads = max(1, int(plan.cpus_per_trial))
    prices = Prices(screen, classes, threads)
    draws = 1 if grid else math.ceil(plan.num_samples / len(screen))  # random/Optuna: each config stands for its share

    def arm_times(fraction: float, tested: bool) -> list[float]:
        configs = check_trials(params, plan.smoke, grid, record["space_name"], fraction) if fraction < 1 else screen
        return [trial_seconds(cfg, sizes[cfg.dataset], prices, tested) for cfg in configs]

    out, arms = [], record["expected_trials"] // seeds
    first = arm_times(rungs[0]["budget"] / plan.max_t, plan.test_shown)
    if grid and len(first) != arms:  # a fraction of the grid: some of its arms, each as the mean arm
        first = [sum(first) / len(first)] * arms
    durations = [t for t in first for _ in range(seeds * draws)][:record["expected_trials"]]
    out.append((SCREEN if len(rungs) == 1 else "rung 1", PHASE_START_S + makespan(durations, slots)))
    for k, rung in enumerate(rungs[1:], start=2):
        arms = rung_keeps(arms, plan.reduction_factor)
        mean = sum(times := arm_times(rung["budget"] / plan.max_t, plan.test_shown)) / len(times)
        out.append((f"rung {k}", PHASE_START_S + makespan([mean] * (arms * seeds), slots)))
    confirm, cap_s = record["phases"].get(CONFIRM), 0.0
    if confirm:
        full = arm_times(1.0, True)
        mean, bound = sum(full) / len(full), phases.confirm_bound(params, confirm, plan.search)
        arms = math.ceil((min(confirm["top"], bound) + bound) / 2)  # known once the screen has ranked
        seeds, cap = len(confirm["seeds"]), confirm.get("max_seeds", len(confirm["seeds"]))
        first_look = PHASE_START_S + makespan([mean] * (arms * seeds), slots)
        at_cap = (PHASE_START_S + makespan([mean] * (bound * seeds), slots)
                  + (cap - seeds) * (PHASE_START_S + makespan([mean] * bound, slots)))
        expected = first_look
        if cap > seeds and arms > 1:  # the design's average looks and trials when no arm differs from the best
            trials, looks = simulated_design(arms, seeds, cap, confirm.get("margin", 0.5),
                                             confirm.get("alpha", 0.05), 0)
            later = max(looks - 1, 0.0)
            if later:  # each later look a phase, its trials (the extra ones shared out) at least one wave
                waves = max((trials - arms * seeds) / slots, later)
                expected += later * PHASE_START_S + waves * mean
        cap_s = sum(s for _, s in out) + at_cap if at_cap > expected else 0.0
        out.append((CONFIRM if cap == seeds else "confirm (expected)", expected))
    return Estimate(sum(s for _, s in out), out, slots, device_words(threads), len(prices.probes), prices.other_load,
                    cap_s)
