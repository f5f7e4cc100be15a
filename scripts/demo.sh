#!/usr/bin/env bash
# The demo: pretrain a small ALBEF from scratch on the 130 bundled COCO
# image-caption pairs (configs/demo.yaml), then evaluate image-text retrieval
# on them the official way (ITC top-k, ITM re-rank) and print R@1/R@5/R@10.
set -euo pipefail
cd "$(dirname "$0")/.."
albef=build/albef
out=${ALBEF_DEMO_DIR:-runs/demo}
"$albef" pretrain --config configs/demo.yaml --output_dir "$out" --keep 1 --print_freq 200 "$@"
last=$(ls "$out"/checkpoint_*.pth | sort | tail -n 1)
"$albef" retrieval --config configs/demo_retrieval.yaml --checkpoint "$last" --output_dir "$out/retrieval" --evaluate
echo "logs, loss curve (loss_curve.png) and checkpoint in $out"
