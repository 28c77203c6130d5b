"""python -m deploy.export RUN_DIR [--trial ID ... | --best | --front] [--out DIR] [--threads N]

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
``--trial``, ``--best``: after a confirm phase the confirm trial of the screen's best arm with the best
validation accuracy, else the highest best validation accuracy among the trials that ran to their own end, or ``--front``: those on the front of best validation accuracy against ``--front-cost``)
or a ``train.py`` run directory. A multi-objective sweep's ``--front`` is the front of its own
objectives (with the latency measured alone after it, when it was). Selection is on validation accuracy only, never on test. Files go
to ``RUN_DIR/export/<trial>/`` (``--out`` for another place).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import from the repository root, not from deploy/
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from deploy.choose import FRONT_COSTS, choose  # noqa: E402
from deploy.onnx_export import ExportMismatch, export_one, table_text  # noqa: E402
from study.cli import Parser, run_cli  # noqa: E402
from study.config import UserError  # noqa: E402


# ----------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m deploy.export", description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("run_dir", metavar="RUN_DIR", help="an experiment directory or a train.py run directory")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--trial", nargs="+", default=[], metavar="ID", help="these trials (ids as in the report)")
    which.add_argument("--best", action="store_true",
                       help="the one best (default): after a confirm phase the screen's best arm's confirm trial with "
                            "the best validation accuracy, else the best validation accuracy among the trials that ran to their end")
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
        if out_root.exists() and not out_root.is_dir():
            raise UserError(f"--out {args.out} is a file, not a directory")
        for source in sources:
            out = out_root / source.name
            record = export_one(source, out, args.threads, args.calibration, args.repeats)
            print(f"{source.name}: {out}\n{table_text(record)}\n")
            if record["busy_note"]:
                print(f"export: warning: {record['busy_note']}", file=sys.stderr)
    except UserError as exc:
        print(f"export: error: {exc}", file=sys.stderr)
        return 2
    except ExportMismatch as exc:
        print(f"export: verification failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_cli(main)
