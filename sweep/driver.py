"""The driver's work between a validated plan and the summary: connect to Ray, check the cluster
can run the trials, prepare the data once, record the sweep, run or resume it, print the outcome."""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pandas as pd
import ray

from study import questions
from study.cli import duration, shown
from study.config import UserError
from study.layout import (CONFIRM, SCREEN, confirm_looks, expected_trials, look_of, phase_directories, rung_of,
                          screen_rungs, write_sweep)
from study.load import load
from study.selection import confirm_arms, promoted_arms
from study.significance import ALPHA, EQUIVALENCE_MARGIN
from sweep import experiment, storage, trust, tuner
from sweep.closing import closing_lines, named, phase_summary
from sweep.estimate import estimate_sweep, trial_slots
from sweep.packing import sweep_packing
from sweep.planning import phases
from sweep.planning.plan import Plan
from sweep.planning.screen import absolute_location
from training.checkpoint import provenance


def start(args: argparse.Namespace, params: dict[str, Any], plan: Plan, record: dict[str, Any],
          notes: Sequence[str] = ()) -> int:
    """A new experiment: claim its directory (two starts with one --name cannot share it), then the
    data, the cluster and the record; a failure before the record leaves no directory behind. The
    planner's `notes` (warnings) print once those checks passed, so an error stays one line."""
    if storage.is_local(plan.experiment_dir):
        trust.signing_key()  # made now if missing: a config directory it cannot be written to is one line
    made = experiment.claim(plan.experiment_dir)
    tuner.BUDGET.start(args.time_budget)
    try:
        prepare_data(params["data_dir"], record["datasets"])
        with experiment.driving(plan.experiment_dir), connected(args.address):
            packing = sweep_packing(params, plan, record) if args.gpus_per_trial is None and cluster_gpus() else None
            plan.gpus_per_trial = check_resources(plan.cpus_per_trial,
                                                  packing.share if packing else args.gpus_per_trial)
            estimate = estimate_sweep(params, plan, record, cluster_slots(plan))
            record = {**record, "plan": asdict(plan), **provenance(), "estimate": asdict(estimate),
                      **({"packing": asdict(packing)} if packing else {})}
            write_sweep(plan.experiment_dir, record)
            for note in notes:
                print(note, file=sys.stderr, flush=True)
            if packing:
                print(packing.line(), flush=True)
            print(f"experiment {shown(plan.experiment_dir)}: {phases_line(record)}; monitor with: tensorboard --logdir "
                  f"{shown(plan.experiment_dir)}\n{estimate.line()}", flush=True)
            return run_phases(plan, record, retry_errored=False)
    finally:
        experiment.release_claim(plan.experiment_dir, made)


def resume(args: argparse.Namespace) -> int:
    """--resume DIR: the experiment's own plan from sweep.json, each phase where it stopped. The
    cluster address may change, and --max-failures N > 0 (or the experiment's own) resumes errored
    trials from their checkpoints."""
    tuner.BUDGET.start(args.time_budget)
    with recorded(args.resume, args.trial_timeout) as (plan, record):
        retries = plan.max_failures if args.max_failures is None else args.max_failures
        with connected(args.address):
            check_resources(plan.cpus_per_trial, plan.gpus_per_trial)
            left = []
            steps = phases.phase_plans(record, plan)
            for name, (_, phase) in steps.items():
                done, todo = experiment.phase_left(phase, phase_expected(record, name), retried(record, name, retries > 0))
                several = len(steps) > 1 or CONFIRM in record["phases"]
                left.append(f"{done} done, {todo} left" + (f" ({name})" if several else ""))
            print(f"resuming {shown(plan.experiment_dir)}: {'; '.join(left)}", flush=True)
            return run_phases(plan, record, retry_errored=retries > 0)


def trust_experiment(args: argparse.Namespace) -> int:
    """--trust DIR: sign the experiment's Ray Tune files as the user's own (sweep.trust), so that
    --resume and --confirm restore them: for an experiment made before sweeps signed their files, or
    one received from someone the user trusts. Links and other users' files stay refused."""
    experiment_dir = absolute_location(args.trust)
    if not storage.is_local(experiment_dir):
        raise UserError(f"{experiment_dir} is on an object store, whose files are not signed nor checked: "
                        "nothing to trust")
    experiment.load_plan(experiment_dir)  # an experiment directory, or one line
    with experiment.driving(experiment_dir):
        count = trust.trust(experiment_dir)
    print(f"signed {count} file{'s' if count != 1 else ''} of {experiment_dir} as yours (key {trust.key_file()}): "
          "--resume and --confirm restore them now; they are unpickled, and a pickle can run any code, so trust "
          "only an experiment whose origin you know", flush=True)
    return 0


def confirm_again(args: argparse.Namespace) -> int:
    """--confirm DIR: the confirm phase of a screened experiment. With only --max-seeds (and --margin
    for a phase recorded before questions were), its confirm phase continues with more seeds under
    the new cap, no trial run again; else a confirm phase is added, or run again with other
    --confirm-top/--confirm-seeds: an earlier one keeps its directory and stays listed in sweep.json
    (phases.earlier_confirms), and the report reads the newest."""
    tuner.BUDGET.start(args.time_budget)
    with recorded(args.confirm, args.trial_timeout) as (plan, record):
        if plan.objectives:
            raise UserError(f"{plan.experiment_dir} ran a multi-objective search: it has a front, not a best arm to "
                            "confirm")
        if not plan.phase_dir:
            raise UserError(f"{plan.experiment_dir} was recorded before sweeps had phases: it cannot take a confirm "
                            "phase; run the space again")
        recorded_phases = record["phases"]
        previous = recorded_phases.get(CONFIRM) or {}
        continuing = previous.get("arms") and args.confirm_top is None and args.confirm_seeds is None
        if continuing and args.max_seeds is None and args.margin is not None:
            raise UserError("--margin is recorded with the questions a confirm phase declares: give it with "
                            "--max-seeds N to continue this one (declared before questions were), or with "
                            "--confirm-top/--confirm-seeds for a new confirm phase")
        with connected(args.address):
            check_resources(plan.cpus_per_trial, plan.gpus_per_trial)
            if not screen_ended(plan, record):
                raise UserError(f"the screen of {plan.experiment_dir} is unfinished: continue it first with "
                                f"--resume {plan.experiment_dir}")
            prepare_data(record["params"]["data_dir"], record.get("datasets", []))  # moved: another machine's cache
            if continuing and args.max_seeds is not None:
                continue_confirm(plan, record, args.max_seeds, args.margin)
                return run_phases(plan, record, retry_errored=False)
            earlier = recorded_phases.get("earlier_confirms", []) + ([previous] if previous.get("arms") else [])
            top = args.confirm_top or previous.get("top", phases.CONFIRM_TOP)
            seeds = args.confirm_seeds or len(previous.get("seeds", [])) or phases.CONFIRM_SEEDS
            name = CONFIRM if not earlier else f"{CONFIRM}-{len(earlier) + 1}"
            recorded_phases[CONFIRM] = phases.new_confirm(record["params"], top, seeds, name, args.max_seeds,
                                                          args.margin)
            if earlier:
                recorded_phases["earlier_confirms"] = earlier
            write_sweep(plan.experiment_dir, record)
            return run_phases(plan, record, retry_errored=False)


def continue_confirm(plan: Plan, record: dict[str, Any], max_seeds: int, margin: float | None) -> None:
    """Raise the confirm phase's cap to `max_seeds` (never lower it), recorded before anything runs.
    A phase recorded before questions and looks gets them now, as the rule declares them from its
    arms (at `margin`), its seeds so far its first look under their own cap; its questions still open
    there open again under the new cap (the report says what that costs the error rate)."""
    confirm = record["phases"][CONFIRM]
    if not confirm.get("looks"):
        confirm.setdefault("margin", margin or EQUIVALENCE_MARGIN)
        confirm.setdefault("alpha", ALPHA)
        confirm["questions"] = questions.declare(confirm["arms"], confirm["factors"], confirm.get("references"),
                                                 confirm["margin"])
        ran = confirm_trials(plan)
        first = questions.looks_of(confirm, ran["seed"].dropna().astype(int).unique() if len(ran) else ())[0]
        confirm.update(max_seeds=first["cap"], declared_after=len(first["seeds"]),
                       looks=[{**first, "expected_trials": len(first["arms"]) * len(first["seeds"])}])
        confirm["looks"][0]["answers"] = {q: a.record() for q, a in assess(confirm, ran)[-1].items()}
    elif margin is not None and margin != confirm["margin"]:
        raise UserError(f"the confirm phase of {plan.experiment_dir} declared its questions at +-{confirm['margin']:g} "
                        f"points: --margin cannot change them now (the report's --margin reads other margins)")
    if max_seeds < confirm["max_seeds"]:
        raise UserError(f"--max-seeds {max_seeds} is below the confirm phase's cap of {confirm['max_seeds']}: a cap "
                        "is only raised")
    confirm["max_seeds"] = max_seeds
    write_sweep(plan.experiment_dir, record)
    print(f"confirm: continued with a cap of {max_seeds} seeds an arm", flush=True)


@contextlib.contextmanager
def recorded(location: str, trial_timeout: float | None = None) -> Iterator[tuple[Plan, dict[str, Any]]]:
    """The screen's plan and sweep.json of an existing experiment (which may have moved), the
    experiment held for this driver while the body runs (experiment.driving: before the repair below writes
    anything) and its pickles checked before Ray restores them (sweep.trust: the user's own, signed).
    A `trial_timeout` given (--trial-timeout) replaces the recorded one, in sweep.json too."""
    experiment_dir = absolute_location(location)
    plan, record = experiment.load_plan(experiment_dir)
    with experiment.driving(experiment_dir):
        trust.check_owned(experiment_dir)
        trust.check_signed(experiment_dir)
        for _, directory, _ in phase_directories(record):  # a state file a kill cut short (sweep.storage)
            for line in storage.repair_state(f"{experiment_dir}/{directory}"):
                print(f"note: {directory}/{line}", flush=True)
        if trial_timeout is not None:
            plan = replace(plan, trial_timeout=trial_timeout)
            record["plan"]["trial_timeout"] = trial_timeout
            write_sweep(experiment_dir, record)
        yield replace(plan, experiment_dir=experiment_dir), record


def screen_ended(plan: Plan, record: dict[str, Any]) -> bool:
    """Whether every rung of the screen has run (the last one's arms chosen) and left nothing to do."""
    rungs = screen_rungs(record)
    if rungs and not (len(rungs) == 1 or rungs[-1].get("arms")):
        return False
    steps = phases.phase_plans(record, plan)
    return all(not experiment.phase_left(phase, phase_expected(record, name), retry_errored=False)[1]
               for name, (_, phase) in steps.items() if not phase.confirms)


def phase_expected(record: dict[str, Any], directory: str) -> int:
    """The trials sweep.json expects in one phase directory: a rung's, the screen's, a confirm look's
    or a confirm phase's."""
    rung, look = rung_of(record, directory), look_of(record, directory)
    if rung is not None:
        return expected_trials(record, SCREEN, rung)
    if look is not None:
        return expected_trials(record, CONFIRM, look)
    return expected_trials(record, CONFIRM if directory.startswith(CONFIRM) else SCREEN)


def retried(record: dict[str, Any], directory: str, retry_errored: bool) -> bool:
    """Whether a phase's errored trials are retried: not a screen rung's once the next step's arms are
    chosen from it (the next rung's, or the confirm phase's: it is final then, a retry could not
    change them)."""
    if directory.startswith(CONFIRM):  # a look once assessed is final: the next look was chosen from it
        look = look_of(record, directory)
        return retry_errored and (look is None or "answers" not in confirm_looks(record)[look])
    rungs = screen_rungs(record)
    rung = rung_of(record, directory)
    following = (rungs[rung + 1] if rung is not None and rung + 1 < len(rungs)
                 else record.get("phases", {}).get(CONFIRM) or {})
    return retry_errored and not following.get("arms")


def phases_line(record: dict[str, Any]) -> str:
    """'screen of 48 trials, then a confirm phase (top 3, 3 fresh seeds, up to 12)'; a
    successive-halving screen names its rungs' budgets."""
    confirm = record["phases"].get(CONFIRM)
    line = f"screen of {expected_trials(record, SCREEN)} trials"
    rungs = screen_rungs(record)
    if len(rungs) > 1:
        line += (f" in {len(rungs)} rungs of successive halving (budgets "
                 f"{', '.join(str(r['budget']) for r in rungs)} epochs)")
    if confirm:
        seeds = len(confirm["seeds"])
        cap = confirm.get("max_seeds", seeds)
        line += (f", then a confirm phase (top {confirm['top']}, {seeds} fresh seeds"
                 + (f", up to {cap})" if cap > seeds else ")"))
    return line


def run_phases(plan: Plan, record: dict[str, Any], retry_errored: bool) -> int:
    """The screen (rung by rung under successive halving), then (when sweep.json plans one) the
    confirm phase; a phase that has ended is not run again. A rung's arms, and the confirm's, are
    chosen once the step before has ended, and recorded before anything of them runs."""
    axes = [k for k, v in record["params"].items() if isinstance(v, dict)]
    confirm = record.get("phases", {}).get(CONFIRM)
    rungs = screen_rungs(record)
    for k in range(max(len(rungs), 1)):
        if k and not rungs[k].get("arms"):
            promote(plan, record, k)
        directory = rungs[k]["dir"] if rungs else SCREEN
        params, phase = phases.phase_plans(record, plan)[directory]
        estimated = [float(s) for _, s in (record.get("estimate") or {}).get("phases") or []]
        if k < len(estimated):  # the console's ETA of the whole sweep: this step's estimate and the later ones'
            phase = replace(phase, estimated_s=estimated[k], later_s=sum(estimated[k + 1:]))
        code = run_phase(phase, params, phase_expected(record, directory), retried(record, directory, retry_errored),
                         axes, last=not confirm and k == max(len(rungs), 1) - 1, rungs=len(rungs))
        if code:
            following = f"rung {k + 2}" if k + 1 < len(rungs) else "the confirm phase" if confirm else None
            if code == 1 and following:  # every trial of this step errored: nothing to choose the next one from
                print(f"run.py: {following} did not start: every trial of {directory} errored", file=sys.stderr)
            return code
    if not confirm:
        return 0
    if not confirm.get("arms"):
        choose_arms(plan, record)
    if not confirm.get("looks"):  # a confirm phase recorded before looks: its one fixed look
        params, phase = phases.phase_plans(record, plan)[confirm["dir"]]
        return run_phase(phase, params, expected_trials(record, CONFIRM), retry_errored, axes, last=True)
    return run_looks(plan, record, retry_errored, axes)


def run_looks(plan: Plan, record: dict[str, Any], retry_errored: bool, axes: list[str]) -> int:
    """The confirm phase look by look (study.questions): run (or continue) a look, assess every
    question on the confirm trials so far, record the answers in sweep.json, and, while a question is
    open and its arms are below the cap, record the next look (one more seed for those arms) before
    anything of it runs. A look already recorded is run as recorded (a resumed sweep); a cap raised
    since the last look (--confirm EXP --max-seeds N) opens the questions that stopped at the old one."""
    confirm = record["phases"][CONFIRM]
    looks, k = confirm["looks"], 0
    while True:
        if k == len(looks):  # every recorded look ran and was assessed
            if questions.cap_of(confirm) <= looks[-1]["cap"]:
                break
            answers = assess(confirm, confirm_trials(plan), pending=True)[-1]
            grown = grow_look(confirm, answers)
            if grown:
                write_sweep(plan.experiment_dir, record)
            print_look(confirm, k - 1, answers, reopened=True)
            if not grown:
                break
        params, phase = phases.confirm_phase(plan, record["params"], confirm, looks[k])
        code = run_phase(phase, params, looks[k]["expected_trials"], retry_errored and "answers" not in looks[k],
                         axes, last=False)
        if code:
            return code
        if "answers" not in looks[k]:
            answers = assess(confirm, confirm_trials(plan))[-1]
            looks[k]["answers"] = {q: a.record() for q, a in answers.items()}
            if k + 1 == len(looks):
                grow_look(confirm, answers)
            write_sweep(plan.experiment_dir, record)  # the answers and the next look, before it runs
            print_look(confirm, k, answers)
        k += 1
    return closing_lines(plan)


def grow_look(confirm: dict[str, Any], answers: dict[str, questions.Answer]) -> bool:
    """Add the next look to the confirm phase's record (the caller writes it before it runs): one more
    seed for every arm of an open question below the cap; whether there is one."""
    tried = questions.tried_of(confirm)
    grow = questions.next_arms(confirm["questions"], answers, tried, questions.cap_of(confirm))
    if grow:
        confirm["looks"].append(phases.next_look(confirm, [list(tried).index(a) for a in grow]))
    return bool(grow)


def confirm_trials(plan: Plan) -> pd.DataFrame:
    """The confirm phase's trials on disk, every look's."""
    return load(plan.experiment_dir).phase(CONFIRM).trials


def assess(confirm: dict[str, Any], trials: pd.DataFrame, pending: bool = False) -> list[dict[str, questions.Answer]]:
    """Every declared question's answer after each look so far, from the confirm phase's `trials`
    (study.questions.assess_looks)."""
    return questions.assess_looks(confirm, trials, confirm["questions"], confirm.get("alpha", ALPHA), pending)


def print_look(confirm: dict[str, Any], k: int, answers: dict[str, questions.Answer], reopened: bool = False) -> None:
    """After look k: how many questions are settled, open and closed, and what the next look trains;
    where one follows, each question's answer so far (after the last, the closing lines print them)."""
    states = [a.state for a in answers.values()]
    counts = ", ".join(f"{states.count(s)} {s}" for s in questions.STATES if states.count(s))
    looks = confirm["looks"]
    following = (f"look {k + 2}: one more seed ({looks[k + 1]['seeds'][0]}) for {len(looks[k + 1]['arms'])} arm(s) "
                 "of the open questions" if k + 1 < len(looks) else "no look follows")
    when = (f"the cap raised to {confirm['max_seeds']} seeds after look {k + 1}" if reopened else
            f"confirm look {k + 1}")
    print(f"\n{when}: {len(answers)} declared question{'s' if len(answers) != 1 else ''}: {counts}; {following}",
          flush=True)
    if k + 1 < len(looks):
        for q in confirm["questions"]:
            print(f"  {questions.sentence(q, answers[q['id']])}", flush=True)


def promote(plan: Plan, record: dict[str, Any], k: int) -> None:
    """Rung k's arms: the best 1/eta of rung k-1's by validation accuracy at the end of their fitted
    schedules (study.selection.promoted_arms), recorded in sweep.json before anything of them runs,
    and printed."""
    rungs = record["phases"][SCREEN]["rungs"]
    screen = load(plan.experiment_dir).phase(SCREEN)
    factors = phases.factors_of(record["params"])
    arms, ranked = promoted_arms(screen.trials, screen.epochs, factors, k - 1, plan.reduction_factor)
    if not arms:
        raise UserError(f"no trial of the screen's rung {k} reported a validation accuracy: nothing to promote; "
                        f"its trials are in {plan.experiment_dir}/{rungs[k - 1]['dir']}")
    rungs[k].update(arms=arms, expected_trials=len(arms) * phases.seeds_per_arm(record["params"]),
                    ranked=ranked)
    write_sweep(plan.experiment_dir, record)
    print(f"\nrung {k + 1} of {len(rungs)}: the best {len(arms)} of {ranked} arms of rung {k} by validation accuracy at the "
          f"end of its {rungs[k - 1]['budget']}-epoch schedules, each trained again from scratch for "
          f"{rungs[k]['budget']} epochs:", flush=True)
    for arm in arms:
        levels = " ".join(f"{f}={v}" for f, v in arm["levels"].items()) or "(one arm)"
        print(f"  {levels}: {arm['why']}", flush=True)


def choose_arms(plan: Plan, record: dict[str, Any]) -> None:
    """The confirm set from the screen's results (study.selection.confirm_arms), recorded in sweep.json
    before anything of it runs, and printed."""
    confirm = record["phases"][CONFIRM]
    # planned before confirm phases ran in looks (resumed before its screen ended): the fixed design it planned
    confirm.setdefault("max_seeds", len(confirm["seeds"]))
    confirm.setdefault("margin", EQUIVALENCE_MARGIN)
    confirm.setdefault("alpha", ALPHA)
    screen = load(plan.tune_dir)
    arms, references = confirm_arms(screen.trials, screen.epochs, record["params"], confirm, plan.search,
                                     record.get("reference_levels"))
    if not arms:
        raise UserError(f"no trial of the screen reported a validation accuracy: nothing to confirm; the screen's "
                        f"trials are in {plan.tune_dir}")
    confirm.update(references=references, arms=arms,
                   questions=questions.declare(arms, confirm["factors"], references, confirm["margin"]))
    confirm.update(looks=[phases.first_look(confirm)], expected_trials=len(arms) * len(confirm["seeds"]))
    write_sweep(plan.experiment_dir, record)
    print(f"\nconfirm: {len(arms)} arm{'s' if len(arms) != 1 else ''} x {len(confirm['seeds'])} fresh seeds "
          f"{confirm['seeds']} = {confirm['expected_trials']} trials at its first look, each to its end (fifo), then "
          f"one more seed per look for the arms of the questions still open, up to {confirm['max_seeds']} an arm:",
          flush=True)
    for arm in confirm["arms"]:
        levels = " ".join(f"{f}={v}" for f, v in arm["levels"].items()) or "(one arm)"
        print(f"  {levels}: {arm['why']}", flush=True)
    alpha = questions.family_alpha(confirm["questions"], confirm["alpha"])
    print(f"  {len(confirm['questions'])} declared question{'s' if len(confirm['questions']) != 1 else ''}, one family "
          f"at {confirm['alpha']:g} (each at "
          f"{alpha:.2g}, repeated intervals of O'Brien-Fleming type), equivalence within +-{confirm['margin']:g} points:",
          flush=True)
    for q in confirm["questions"]:
        print(f"    {q['id']}" + (f" ({'; '.join(q['roles'])})" if q["roles"] else ""), flush=True)


def run_phase(plan: Plan, params: dict[str, Any], expected: int, retry_errored: bool, axes: list[str],
              last: bool, rungs: int = 0) -> int:
    """Run (or continue) one phase unless it has ended, then print its summary; the exit status of
    sweep.closing.phase_summary(). `last`: the closing lines (reproduce, monitor, analyse) follow this phase. The phases
    are named on the console when there are two or more (`rungs`: the screen's rungs)."""
    framed = experiment.recorded_in_frames(plan)
    if framed is not None:
        print(f"\n{plan.phase_dir}: {framed} trials, as the report's frames record them", flush=True)
        return 0
    done, left = experiment.phase_left(plan, expected, retry_errored)
    if left and tuner.BUDGET.seconds and tuner.BUDGET.left() <= 0:
        tuner.BUDGET.spent = True
        return budget_spent(plan)
    if named(plan, last):
        how = ("the chosen arms x fresh seeds, fifo scheduler" if plan.confirms else
               f"{'promoted arms' if plan.points else plan.search + ' search'}, each from scratch with its schedule "
               f"fitted to {plan.budget} of {plan.max_t} epochs" if rungs > 1 else
               f"{plan.search} search, {plan.scheduler} scheduler")
        print(f"\n{plan.phase_dir}: {expected} trials, {how}"
              + (f"; {done} done already" if done else "") + (": nothing left to run" if not left else ""),
              flush=True)
    if left:  # a new Tuner when the phase has not saved one yet (tuner.restore_tuner)
        stopped = run_tuner(lambda: tuner.restore_tuner(plan, params, retry_errored=retry_errored), plan)
        if stopped is not None:
            return stopped
    code = phase_summary(plan, expected, axes, last)
    return budget_spent(plan) if code and tuner.BUDGET.spent else code


BUDGET_SPENT = 75  # the exit status when --time-budget stopped the sweep with work left (EX_TEMPFAIL: run it again)


def budget_spent(plan: Plan) -> int:
    """--time-budget ended the sweep with trials left: one line, and its exit status."""
    print(f"run.py: --time-budget {duration(tuner.BUDGET.seconds or 0)} spent: no trial started that could not end in "
          "time, and those running stopped at their last epoch's checkpoint; continue with: python sweep/run.py "
          f"--resume {plan.experiment_dir} (a new --time-budget may be given)", file=sys.stderr, flush=True)
    return BUDGET_SPENT


def run_tuner(make_tuner: Callable[[], Any], plan: Plan) -> int | None:
    """Run the trials with the disk space reserve held (sweep.storage): a full disk stops them like
    Ctrl-C and is one line, with every finished result kept and --resume to continue. None when the
    trials ran (whether or not all ended: report() tells); 130 when Tune was interrupted within a step
    (a second Ctrl-C, or a stop signal Tune's step kept waiting: sweep.storage.interrupt_if_stuck)."""
    tune_dir = storage.running_dir = plan.tune_dir
    if storage.is_local(tune_dir):
        os.makedirs(tune_dir, exist_ok=True)
    storage.reserve(tune_dir, resume_dir=plan.experiment_dir)
    try:
        with ray_logs_shown():
            phase_tuner = make_tuner()
            trust.sign_files(tune_dir, [Path(tune_dir, "tuner.pkl")])  # written by the Tuner made now, or verified
            with tuner.controller_hooks(tune_dir, plan.trial_timeout):
                try:
                    phase_tuner.fit()
                except RuntimeError as exc:  # Ray 2.60 makes its ResultGrid after the run (what it saved is
                    if "without setting `trial_dir_name`" not in str(exc):  # whole): a trial --time-budget kept
                        raise  # from starting has no directory, and Ray's grid fails on it; we read none of it
                except KeyboardInterrupt:
                    print(f"run.py: stopped at once, within a step of Ray Tune (it had not ended "
                          f"{storage.STOP_GRACE_S:g} s after the stop signal, or a second one came); what it "
                          f"saved is kept; continue with: python sweep/run.py --resume {plan.experiment_dir}",
                          file=sys.stderr, flush=True)
                    return 130
        if not storage.stopped_full(tune_dir):
            return None
    except (OSError, EOFError):  # Ray reading back a file it could not write
        if not storage.stopped_full(tune_dir):
            raise
    finally:
        storage.release(tune_dir)
        storage.running_dir = None  # no phase runs now (a sweep run in-process leaves nothing behind)
    raise UserError(f"no space left on the device of {plan.experiment_dir}: the sweep stopped, and every finished "
                    "trial's results are kept; free space, then continue with: python sweep/run.py --resume "
                    f"{plan.experiment_dir}")


@contextlib.contextmanager
def connected(address: str | None) -> Iterator[None]:
    """Join the cluster at `address`, or start a local Ray; leave a Ray the caller started alone.
    Ray's own log lines stay hidden until the checks after it started have passed (ray_logs_shown):
    an error found there is the one line of the contract, not the third. Ray's known chatter is
    filtered throughout (sweep.console.quiet_ray)."""
    from sweep.console import quiet_ray

    quiet_ray()
    if ray.is_initialized():
        yield
        return
    if address == "local":  # a private Ray: every port on 127.0.0.1, not on the machine's network
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ours = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(address=address, logging_level=logging.ERROR)
        signal.signal(signal.SIGTERM, ours)  # ray.init installs its own, which exits without saving
        quiet_ray()  # ray.init may have set up its handler anew
    except (ConnectionError, ValueError) as exc:
        where = address or "the address `ray start` last recorded on this machine"
        raise UserError(f"cannot connect to the Ray cluster at {where}: {str(exc).splitlines()[0]} "
                        "(--address local starts a private Ray)") from None
    try:
        yield
    finally:
        ray.shutdown()


@contextlib.contextmanager
def ray_logs_shown() -> Iterator[None]:
    """Ray's warnings while the trials run (what connected() hid at start-up), its known chatter
    still filtered."""
    ray_log = logging.getLogger("ray")
    level = ray_log.level
    ray_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        ray_log.setLevel(level)


def cluster_gpus() -> float:
    """The GPUs of the cluster's largest node (0 without any)."""
    return max((node["Resources"].get("GPU", 0) for node in ray.nodes() if node["Alive"]), default=0)


def check_resources(cpus_per_trial: float, gpus_per_trial: float | None) -> float:
    """The GPUs per trial to use (default: 1 when the cluster has GPUs; the driver passes
    sweep.packing's share for a new sweep), after checking that some node can hold one trial (Ray
    would otherwise wait for resources forever)."""
    nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    most_cpus = max(node.get("CPU", 0) for node in nodes)
    most_gpus = max(node.get("GPU", 0) for node in nodes)
    if gpus_per_trial is None:
        gpus_per_trial = 1.0 if most_gpus else 0.0
    if gpus_per_trial > most_gpus:
        raise UserError(f"--gpus-per-trial {gpus_per_trial:g} but the largest node of the Ray cluster has "
                        f"{most_gpus:g} GPU(s)")
    if cpus_per_trial > most_cpus:
        raise UserError(f"--cpus-per-trial {cpus_per_trial:g} but the largest node of the Ray cluster has "
                        f"{most_cpus:g} CPU(s)")
    return gpus_per_trial


def cluster_slots(plan: Plan) -> int:
    """Trials the cluster runs at once (sweep.estimate.trial_slots of its alive nodes)."""
    return trial_slots([n["Resources"] for n in ray.nodes() if n["Alive"]], plan.cpus_per_trial,
                       plan.gpus_per_trial, plan.max_concurrent)


def prepare_data(data_dir: str, datasets: list[tuple[str, int]]) -> None:
    """Download and verify every dataset once, here, before any trial starts."""
    from training.datasets import prepare_dataset

    for name, image_size in datasets:
        prepare_dataset(name, data_dir, image_size)


