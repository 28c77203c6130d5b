"""python -m sweep.export RUN_DIR [--trial ID ... | --best | --front] [--out DIR] [--threads N]

Hands over the model a sweep (or one train.py run) found, as files a device can run, each verified
and measured here: for every chosen trial, from its best-validation weights (the weights its test
accuracy was reported for),

- ``model.onnx``: ONNX from ``torch.onnx.export(..., dynamo=True)`` with a dynamic batch dimension,
  checked with onnxruntime against PyTorch on real test images (logits within ``ATOL + RTOL * |x|``,
  else the export fails);
- ``model-int8.onnx``: int8 by static post-training quantisation (onnxruntime.quantization, QDQ,
  int8 weights per channel, uint8 activations, min-max calibration on ``--calibration`` images of
  the trial's own training split);
- ``export.md`` / ``export.json``: per format, the file size, the test accuracy on the whole test
  set, and the median latency at batch 1 and 32 (PyTorch eager and onnxruntime on this CPU, one
  process, ``--threads`` threads, warm-up first, ``--repeats`` timed runs), with the machine.

RUN_DIR is an experiment directory (``sweep/run.py``'s STORAGE/NAME; the trials chosen by
``--trial``, ``--best``: the highest best validation accuracy among the trials that ran to their
own end, or ``--front``: those on the front of best validation accuracy against ``--front-cost``)
or a ``train.py`` run directory. A multi-objective sweep's ``--front`` is the front of its own
objectives (with the latency measured alone after it, when it was). Selection is on validation accuracy only, never on test. Files go
to ``RUN_DIR/export/<trial>/`` (``--out`` for another place).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

if __package__ in (None, ""):  # run as a script: import from the repository root, not from sweep/
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from analysis.pareto import LATENCY_FILE  # noqa: E402
from training import checkpoint as ckpt  # noqa: E402
from training.config import ConfigError, Parser, TrainConfig, UserError, run_cli  # noqa: E402

ATOL, RTOL = 1e-4, 1e-4  # ONNX fp32 logits against PyTorch's (float reassociation differs by ~1e-6)
VERIFY_IMAGES = 512  # test images the fp32 ONNX model is checked on
BATCHES = (1, 32)  # latency batch sizes
EVAL_BATCH = 256
FRONT_COSTS = ("flops", "params", "size_mb")


@dataclass(frozen=True)
class Source:
    """One model to export: its name, config, checkpoint and the test accuracy its run reported."""
    name: str
    cfg: TrainConfig
    checkpoint: Path
    reported_test_acc: float | None


# ----------------------------------------------------------------------------------- choosing
def choose(run_dir: Path, trials: list[str], best: bool, front: bool, front_cost: str) -> list[Source]:
    """The models to export from `run_dir` (module docstring)."""
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a directory")
    if (run_dir / "config.json").is_file():  # a train.py run
        if trials or front:
            raise UserError(f"{run_dir} is a train.py run (one model): --trial and --front are for sweeps")
        summary = read_record(run_dir / "summary.json", required=False)
        return [Source(run_dir.name, read_config(run_dir / "config.json"), newest_checkpoint(run_dir),
                       summary.get("test_acc"))]
    from analysis.effects import completed
    from analysis.load import load
    from analysis.pareto import objective_front, pareto_front, read_latency_alone

    experiment = load(run_dir)
    frame = experiment.trials
    if trials:
        unknown = sorted(set(trials) - set(frame["trial_id"]))
        if unknown:
            raise UserError(f"no trial {', '.join(unknown)} in {run_dir} (its trials: "
                            f"{', '.join(frame['trial_id'].head(8))}{', ...' if len(frame) > 8 else ''})")
        picked = frame[frame["trial_id"].isin(trials)]
    else:
        ended, _ = completed(frame)
        if ended.empty:
            raise UserError(f"no trial of {run_dir} has run to its own end yet: nothing to choose from "
                            "(--trial ID exports a given one)")
        objectives = (experiment.sweep.get("plan") or {}).get("objectives") if isinstance(experiment.sweep, dict) else None
        if front and objectives:  # a multi-objective sweep: its own front, latency measured alone if it was
            marked = objective_front(ended, objectives, read_latency_alone(run_dir))
            picked = marked[marked["pareto"]]
        elif front:
            picked = ended[pareto_front(ended, "best_val_acc", front_cost).to_numpy()]
            picked = picked.sort_values(front_cost, kind="stable")
        else:
            picked = ended.sort_values("best_val_acc", ascending=False, kind="stable").head(1)
    return [Source(row.trial_id, read_config(run_dir / row.trial_dir / "trial_config.json"),
                   newest_checkpoint(run_dir / row.trial_dir), _number(row.test_acc))
            for row in picked.itertuples()]


def _number(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def read_record(path: Path, required: bool = True) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        if required:
            raise UserError(f"{path} is missing") from None
        return {}
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} cannot be read ({exc})") from None
    if not isinstance(record, dict):
        raise UserError(f"{path} does not hold a JSON object")
    return record


def read_config(path: Path) -> TrainConfig:
    """The resolved config train.py (config.json) or the trainable (trial_config.json) recorded."""
    config = read_record(path).get("config")
    if not isinstance(config, dict):
        raise UserError(f"{path} holds no 'config' object")
    try:
        return TrainConfig.from_dict(config)
    except ConfigError as exc:
        raise UserError(f"{path}: {exc}") from None


def newest_checkpoint(run_dir: Path) -> Path:
    """train.py's checkpoint/, else the trial's newest checkpoint_NNNNNN/ (Ray keeps the last two)."""
    candidates = [run_dir / "checkpoint"] + sorted(run_dir.glob("checkpoint_*"), reverse=True)
    for candidate in candidates:
        if (candidate / ckpt.CHECKPOINT_FILE).is_file():
            return candidate / ckpt.CHECKPOINT_FILE
    raise UserError(f"{run_dir} has no checkpoint (a trial that never finished an epoch, or whose "
                    "checkpoints were deleted)")


# ----------------------------------------------------------------------------------- exporting
@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """The exporter's and the quantiser's progress lines and warnings (torchvision's absence among
    them) stay off the console: the table is the output."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript",
                                                    "root")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for log, level in zip(loggers, levels):
            log.setLevel(level)


def build_model(source: Source, num_classes: int) -> torch.nn.Module:
    from models import create_model

    saved = ckpt.load_checkpoint(source.checkpoint)
    weights = saved.get("best_model") or ckpt.model_weights(saved)
    model = create_model(replace_pretrained(source.cfg), num_classes)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise UserError(f"{source.checkpoint} does not fit the model its config describes: "
                        f"{str(exc).splitlines()[0]}") from None
    return model.eval()


def replace_pretrained(cfg: TrainConfig) -> TrainConfig:
    """The checkpoint holds every weight: never fetch ImageNet weights to overwrite them."""
    return TrainConfig.from_dict({**cfg.to_dict(), "pretrained": False}) if cfg.pretrained else cfg


def normalised(x_uint8: torch.Tensor, mean, std) -> torch.Tensor:
    from training.loader import DeviceLoader

    loader = DeviceLoader(x_uint8, torch.zeros(len(x_uint8), dtype=torch.long), batch_size=EVAL_BATCH,
                          mean=mean, std=std, device="cpu", channels_last=False)
    return torch.cat([x for x, _ in loader.batches()]).contiguous()


def accuracy(predict: Callable[[np.ndarray], np.ndarray], x: torch.Tensor, y: torch.Tensor) -> float:
    correct = 0
    for start in range(0, len(x), EVAL_BATCH):
        logits = predict(x[start:start + EVAL_BATCH].numpy())
        correct += int((logits.argmax(1) == y[start:start + EVAL_BATCH].numpy()).sum())
    return 100.0 * correct / len(x)


def median_ms(call: Callable[[], Any], repeats: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def export_one(source: Source, out: Path, threads: int, calibration: int, repeats: int) -> dict[str, Any]:
    """Export, verify and measure one model; write its files to `out`; return its record."""
    import onnxruntime
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from training.datasets import load_dataset
    from training.loader import split_indices
    from training.metrics import model_size_mb

    cfg = source.cfg
    torch.set_num_threads(threads)
    data = load_dataset(cfg.dataset, cfg.resolved_data_dir, cfg.image_size)
    model = build_model(source, data.num_classes)
    test_x, test_y = normalised(data.test_x, data.mean, data.std), data.test_y
    train_idx, _ = split_indices(len(data.train_y), cfg.val_fraction, cfg.subset, cfg.seed)
    calib_x = normalised(data.train_x[train_idx[:calibration]], data.mean, data.std)
    out.mkdir(parents=True, exist_ok=True)
    fp32, int8 = out / "model.onnx", out / "model-int8.onnx"

    with quiet():
        program = torch.onnx.export(model, (test_x[:2],), dynamo=True, input_names=["images"],
                                    output_names=["logits"], verbose=False,
                                    dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},))
        program.save(str(fp32))
    fp32_session = session(fp32, threads)

    def run_onnx(sess) -> Callable[[np.ndarray], np.ndarray]:
        return lambda x: sess.run(None, {"images": x})[0]

    @torch.no_grad()
    def run_torch(x: np.ndarray) -> np.ndarray:
        return model(torch.from_numpy(x)).numpy()

    sample = test_x[:VERIFY_IMAGES].numpy()
    reference, exported = run_torch(sample), run_onnx(fp32_session)(sample)
    max_diff = float(np.abs(reference - exported).max())
    if not np.allclose(exported, reference, atol=ATOL, rtol=RTOL):
        raise ExportMismatch(f"{fp32}: onnxruntime's logits differ from PyTorch's by up to {max_diff:.3g} "
                             f"(tolerance {ATOL:g} + {RTOL:g} x |logit|) on {len(sample)} test images")

    class Calibration(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"images": calib_x[i:i + 32].numpy()} for i in range(0, len(calib_x), 32)])

        def get_next(self):
            return next(self.batches, None)

    prepared = out / "model-prepared.onnx"
    with quiet():
        quant_pre_process(str(fp32), str(prepared))
        quantize_static(str(prepared), str(int8), Calibration(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    prepared.unlink()
    int8_session = session(int8, threads)

    rows = []
    ort_name = f"onnxruntime {onnxruntime.__version__}"
    for fmt, runtime, file, predict, size in (
            ("PyTorch fp32", f"torch {torch.__version__} eager", "", run_torch, model_size_mb(model)),
            ("ONNX fp32", ort_name, fp32.name, run_onnx(fp32_session), mb(fp32)),
            ("ONNX int8 (QDQ)", ort_name, int8.name, run_onnx(int8_session), mb(int8))):
        row = {"format": fmt, "runtime": runtime, "file": file, "size_mb": size,
               "test_acc": accuracy(predict, test_x, test_y)}
        for batch in BATCHES:
            x = test_x[:batch].numpy()
            row[f"latency_ms_b{batch}"] = median_ms(lambda: predict(x), repeats)
        rows.append(row)
    record = {"trial": source.name, "model": cfg.model, "dataset": cfg.dataset, "test_images": len(test_y),
              "reported_test_acc": source.reported_test_acc, "max_abs_logit_diff_fp32": max_diff,
              "tolerance": {"atol": ATOL, "rtol": RTOL, "images": len(sample)},
              "calibration_images": len(calib_x), "threads": threads, "repeats": repeats,
              "machine": machine(), "rows": rows}
    (out / "export.json").write_text(json.dumps(record, indent=2))
    (out / "export.md").write_text(markdown(record))
    return record


# ----------------------------------------------------------------------------------- latency alone


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
    from analysis.effects import completed
    from analysis.load import load
    from analysis.pareto import front
    from training.datasets import load_dataset

    ended, _ = completed(load(run_dir).trials)
    latency_objective = any(metric.startswith("latency_ms") for metric, _ in objectives)
    chosen = ended if latency_objective else ended[front(ended, objectives).to_numpy()]
    classes: dict[tuple[str, str], int] = {}
    measured = {}
    for row in chosen.itertuples():
        cfg = read_config(run_dir / row.trial_dir / "trial_config.json")
        key = (cfg.dataset, cfg.resolved_data_dir)
        if key not in classes:
            classes[key] = load_dataset(cfg.dataset, cfg.resolved_data_dir, cfg.image_size).num_classes
        source = Source(row.trial_id, cfg, newest_checkpoint(run_dir / row.trial_dir), _number(row.test_acc))
        model = build_model(source, classes[key])
        measured[row.trial_id] = latency_alone(model, (3, cfg.image_size, cfg.image_size), threads, repeats)
    record = {"threads": threads, "repeats": repeats, "machine": machine(), "device": "cpu",
              "which": "every trial that ran to its end" if latency_objective else "the front's trials",
              "trials": measured}
    (run_dir / LATENCY_FILE).write_text(json.dumps(record, indent=2))
    return record


class ExportMismatch(Exception):
    """The exported model does not compute what the PyTorch model computes."""


def mb(path: Path) -> float:
    return path.stat().st_size / 2 ** 20


def machine() -> str:
    from training.metrics import cpu_model

    return f"{cpu_model()}, {os.cpu_count()} logical CPUs, {platform.system()}"


def table_text(record: dict[str, Any]) -> str:
    from tabulate import tabulate

    shown = pd.DataFrame(record["rows"]).rename(columns={
        "size_mb": "size (MB)", "test_acc": "test acc (%)", "latency_ms_b1": "latency b=1 (ms)",
        "latency_ms_b32": "latency b=32 (ms)"})
    return tabulate(shown, headers="keys", tablefmt="github", showindex=False, floatfmt=".2f")


def markdown(record: dict[str, Any]) -> str:
    reported = record["reported_test_acc"]
    return (f"# Export of {record['trial']} ({record['model']}, {record['dataset']})\n\n{table_text(record)}\n\n"
            f"Test accuracy on all {record['test_images']} test images, from the best-validation weights"
            + (f" (the run reported {reported:.2f}%)" if reported is not None else "") + ". "
            f"ONNX fp32 matches PyTorch: largest logit difference {record['max_abs_logit_diff_fp32']:.2g} on "
            f"{record['tolerance']['images']} test images (tolerance {ATOL:g} + {RTOL:g} x |logit|). Int8: static "
            f"QDQ quantisation calibrated on {record['calibration_images']} training images. Latency: median of "
            f"{record['repeats']} runs after warm-up, {record['threads']} thread(s), one process, on "
            f"{record['machine']}; int8 is not always faster on models this small: these are measurements.\n")


# ----------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m sweep.export", description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("run_dir", metavar="RUN_DIR", help="an experiment directory or a train.py run directory")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--trial", nargs="+", default=[], metavar="ID", help="these trials (ids as in the report)")
    which.add_argument("--best", action="store_true",
                       help="the trial with the best validation accuracy among those that ran to their end (default)")
    which.add_argument("--front", action="store_true",
                       help="every trial on the front: of the sweep's objectives for a multi-objective sweep, "
                            "else of best validation accuracy against --front-cost")
    p.add_argument("--front-cost", choices=FRONT_COSTS, default="flops", help="cost axis of --front (flops)")
    p.add_argument("--out", help="where the files go (default RUN_DIR/export)")
    p.add_argument("--threads", type=int, default=1, help="threads of every runtime while measuring (1)")
    p.add_argument("--calibration", type=int, default=256, help="training images that calibrate int8 (256)")
    p.add_argument("--repeats", type=int, default=50, help="timed runs per latency (50)")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        for value, flag in ((args.threads, "--threads"), (args.calibration, "--calibration"),
                            (args.repeats, "--repeats")):
            if value < 1:
                raise UserError(f"{flag} must be >= 1")
        run_dir = Path(args.run_dir).expanduser().resolve()
        sources = choose(run_dir, args.trial, args.best, args.front, args.front_cost)
        out_root = Path(args.out).expanduser().resolve() if args.out else run_dir / "export"
        for source in sources:
            out = out_root / source.name
            record = export_one(source, out, args.threads, args.calibration, args.repeats)
            print(f"{source.name}: {out}\n{table_text(record)}\n")
    except UserError as exc:
        print(f"export: error: {exc}", file=sys.stderr)
        return 2
    except ExportMismatch as exc:
        print(f"export: verification failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_cli(main)
