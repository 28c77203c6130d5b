#!/usr/bin/env bash
# Re-runs the sweeps behind docs/RESULTS.md on real Fashion-MNIST (on 2 CPU cores: the stages about 22 minutes, the
# ablation under successive halving about 150 (its confirm phase's looks, up to 12 seeds an arm, about 85 of them),
# the same ablation under ASHA about 45, then resnet-depth about 25),
# then writes each experiment's report into results/<sweep>/: report.md, its figures and the tidy
# frames behind it (trials.csv, epochs.csv, sweep.json; no checkpoints).
# Usage, from the project's environment: bash results/run.sh [STORAGE] (default runs/results).
set -euo pipefail
cd "$(dirname "$0")/.."
STORAGE=${1:-runs/results}
# The sizes both sweeps share: 8,000 training images and 2,000 validation images per seed (the
# 10,000 test images in full), half-width SqueezeNet, batch 64, 9 epochs, no latency timing (noise on a busy CPU).
SIZE=(--dataset fashion-mnist --epochs 9 --set subset=8000 val_fraction=0.2 width=0.5 batch_size=64 measure_latency=false)
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0  # keep this machine's Ray on 127.0.0.1
python sweep/run.py --space stages --samples 3 --address local --storage-path "$STORAGE" --name stages "${SIZE[@]}"
python sweep/run.py --space ablation --address local --storage-path "$STORAGE" --name ablation "${SIZE[@]}"
# The same ablation screened by continuation ASHA (the default before issue 24), kept to compare the two screens;
# its confirm phase ran as one fixed look of 3 seeds (--max-seeds 3), as committed.
python sweep/run.py --space ablation --scheduler asha --max-seeds 3 --address local --storage-path "$STORAGE" --name ablation-asha "${SIZE[@]}"
# resnet-depth without ResNet-152 (results/resnet-depth-cpu.yaml) at what 2 cores allow: 2,000 training images,
# 4 epochs, one seed; a demonstration of the depth table on real data, too small to settle anything.
python sweep/run.py --space results/resnet-depth-cpu.yaml --address local --storage-path "$STORAGE" --name resnet-depth \
  --dataset fashion-mnist --epochs 4 --set subset=2000 val_fraction=0.2 batch_size=64 measure_latency=false
for sweep in stages ablation ablation-asha resnet-depth; do
  python -m analysis.report "$STORAGE/$sweep" --out "results/$sweep"
done
