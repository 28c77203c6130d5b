"""One model as ONNX files a device can run, each verified and measured here (from its best-validation
weights, the weights its test accuracy was reported for):

- ``model.onnx``: ONNX from ``torch.onnx.export(..., dynamo=True)`` with a dynamic batch dimension,
  checked with onnxruntime against PyTorch on real test images (logits within ``ATOL + RTOL * |x|``,
  else the export fails);
- ``model-int8.onnx``: int8 by static post-training quantisation (onnxruntime.quantization, QDQ,
  int8 weights per channel, uint8 activations, min-max calibration on ``calibration`` images of
  the trial's own training split);
- ``export.md`` / ``export.json``: per format, the file size, the test accuracy on the whole test
  set and the share of its images given the class PyTorch fp32 gives (``agreement``), and the median latency at batch 1 and 32 (PyTorch eager and onnxruntime on this CPU, one
  process, ``threads`` threads, warm-up first, ``repeats`` timed runs), with the machine.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
import torch

from deploy.choose import Source, build_model
from deploy.latency import BATCHES, machine
from study.busy import OtherLoad
from study.files import write_text_atomically

ATOL, RTOL = 1e-4, 1e-4  # ONNX fp32 logits against PyTorch's (float reassociation differs by ~1e-6)
VERIFY_IMAGES = 512  # test images the fp32 ONNX model is checked on
EVAL_BATCH = 256


class ExportMismatch(Exception):
    """The exported model does not compute what the PyTorch model computes."""


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


def normalised(x_uint8: torch.Tensor, mean, std) -> torch.Tensor:
    from training.loader import DeviceLoader

    loader = DeviceLoader(x_uint8, torch.zeros(len(x_uint8), dtype=torch.long), batch_size=EVAL_BATCH,
                          mean=mean, std=std, device="cpu", channels_last=False)
    return torch.cat([x for x, _ in loader.batches()]).contiguous()


def predicted(predict: Callable[[np.ndarray], np.ndarray], x: torch.Tensor) -> np.ndarray:
    """The class each image is given (the largest logit)."""
    return np.concatenate([predict(x[start:start + EVAL_BATCH].numpy()).argmax(1)
                           for start in range(0, len(x), EVAL_BATCH)])


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

    rows, reference = [], None
    ort_name = f"onnxruntime {onnxruntime.__version__}"
    with OtherLoad() as load:  # other work on the machine inflates the latencies: measured, and said
        for fmt, runtime, file, predict, size in (
                ("PyTorch fp32", f"torch {torch.__version__} eager", "", run_torch, model_size_mb(model)),
                ("ONNX fp32", ort_name, fp32.name, run_onnx(fp32_session), mb(fp32)),
                ("ONNX int8 (QDQ)", ort_name, int8.name, run_onnx(int8_session), mb(int8))):
            classes = predicted(predict, test_x)
            reference = classes if reference is None else reference  # PyTorch fp32's, the first row
            row = {"format": fmt, "runtime": runtime, "file": file, "size_mb": size,
                   "test_acc": 100.0 * float((classes == test_y.numpy()).mean()),
                   "agreement": 100.0 * float((classes == reference).mean())}
            for batch in BATCHES:
                x = test_x[:batch].numpy()
                row[f"latency_ms_b{batch}"] = median_ms(lambda: predict(x), repeats)
            rows.append(row)
    record = {"trial": source.name, "model": cfg.model, "dataset": cfg.dataset, "test_images": len(test_y),
              "reported_test_acc": source.reported_test_acc, "max_abs_logit_diff_fp32": max_diff,
              "tolerance": {"atol": ATOL, "rtol": RTOL, "images": len(sample)},
              "calibration_images": len(calib_x), "threads": threads, "repeats": repeats,
              "machine": machine(), "other_load": load.share, "busy_note": load.note(), "rows": rows}
    write_text_atomically(out / "export.json", json.dumps(record, indent=2))
    write_text_atomically(out / "export.md", markdown(record))
    return record


def mb(path: Path) -> float:
    return path.stat().st_size / 2 ** 20


def table_text(record: dict[str, Any]) -> str:
    from tabulate import tabulate

    shown = pd.DataFrame(record["rows"]).rename(columns={
        "size_mb": "size (MB)", "test_acc": "test acc (%)", "agreement": "same class as fp32 (%)",
        "latency_ms_b1": "latency b=1 (ms)",
        "latency_ms_b32": "latency b=32 (ms)"})
    return tabulate(shown, headers="keys", tablefmt="github", showindex=False, floatfmt=".2f")


def markdown(record: dict[str, Any]) -> str:
    reported = record["reported_test_acc"]
    return (f"# Export of {record['trial']} ({record['model']}, {record['dataset']})\n\n{table_text(record)}\n\n"
            f"Test accuracy on all {record['test_images']} test images, from the best-validation weights"
            + (f" (the run reported {reported:.2f}%)" if reported is not None else "") + "; same class as fp32: "
            "the share of them each format gives the class PyTorch fp32 gives (an int8 model can keep its accuracy "
            "and still change many predictions). "
            f"ONNX fp32 matches PyTorch: largest logit difference {record['max_abs_logit_diff_fp32']:.2g} on "
            f"{record['tolerance']['images']} test images (tolerance {ATOL:g} + {RTOL:g} x |logit|). Int8: static "
            f"QDQ quantisation calibrated on {record['calibration_images']} training images. Latency: median of "
            f"{record['repeats']} runs after warm-up, {record['threads']} thread(s), one process, on "
            f"{record['machine']}; int8 is not always faster on models this small: these are measurements."
            + (f" **Note: {record['busy_note']}.**" if record.get("busy_note") else "") + "\n")
