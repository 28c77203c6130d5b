"""Benchmark 7, export: the default SqueezeNet and the holistic one, trained briefly on real data,
exported by ``python -m deploy.export`` (ONNX fp32 and static int8), and per format the file size,
the test accuracy on the whole test set and the median latency at batch 1 and 32 (PyTorch eager and
onnxruntime, --threads threads, one process). The models are trained here first, on every core
(train.py's fit, 10 epochs on 4,000 Fashion-MNIST images: minutes on a 2-core CPU), so the
accuracies are those of short runs; what the table compares is each format against the model's
fp32 PyTorch accuracy, size and latency.

    python benchmarks/export.py --quick
    python benchmarks/export.py --threads 1 --out benchmarks/results/cpu-export.json
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import from the repository root
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import torch  # noqa: E402

from benchmarks import common  # noqa: E402

# The two SqueezeNets of the study: its starting point (the `baseline` stage: torchvision's
# SqueezeNet 1.1 with the study's plain recipe) and its final `holistic` stage.
DEFAULTS = {
    "quick": {"dataset": "synthetic", "stages": ["holistic"], "subset": 256, "epochs": 1, "repeats": 3,
              "calibration": 32, "sets": {"width": 0.25, "finetune_epochs": 0, "image_size": 16}},
    "full": {"dataset": "fashion-mnist", "stages": ["baseline", "holistic"], "subset": 4000, "epochs": 10,
             "repeats": 50, "calibration": 256, "sets": {"finetune_epochs": 0}},
}


def main(argv: list[str] | None = None) -> dict:
    parser = common.make_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="", help="dataset directory (default: the usual one)")
    args = parser.parse_args(argv)
    settings = DEFAULTS["quick" if args.quick else "full"]
    args.threads = args.threads or 1
    device = common.setup(args)
    from deploy.choose import Source, newest_checkpoint
    from deploy.onnx_export import export_one
    from sweep.planning.configs import trial_config
    from training.loop import fit

    rows = []
    with tempfile.TemporaryDirectory(prefix="export-bench-") as tmp:
        for stage in settings["stages"]:
            cfg = trial_config({"stage": stage, "dataset": settings["dataset"], "subset": settings["subset"],
                                  "epochs": settings["epochs"], "measure_latency": False, "device": "cpu",
                                  "data_dir": args.data_dir, **settings["sets"]})
            run = Path(tmp) / stage
            torch.set_num_threads(os.cpu_count() or 1)  # train on every core; export_one measures on --threads
            summary = fit(cfg, checkpoint_dir=str(run / "checkpoint"))
            (run / "config.json").write_text(json.dumps({"config": cfg.to_dict()}))
            source = Source(stage, cfg, newest_checkpoint(run), summary["test_acc"])
            record = export_one(source, run / "export", args.threads, settings["calibration"],
                                settings["repeats"])
            for row in record["rows"]:
                rows.append({"model": stage, "params": summary["params"], **{k: row[k] for k in (
                    "format", "size_mb", "test_acc", "latency_ms_b1", "latency_ms_b32")}})
    return common.finish(args, device, "export", {**settings, "threads": args.threads}, rows)


if __name__ == "__main__":
    main()
