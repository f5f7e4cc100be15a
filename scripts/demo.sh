#!/usr/bin/env bash
# The demo: pretrain a small ALBEF from scratch on the 130 bundled COCO
# image-caption pairs (configs/demo.yaml), evaluate it zero-shot on image-text
# retrieval the official way (ITC top-k, ITM re-rank), then fine-tune it for
# retrieval (configs/demo_retrieval.yaml) and evaluate the best epoch.
set -euo pipefail
cd "$(dirname "$0")/.."
albef=build/albef
out=${ALBEF_DEMO_DIR:-runs/demo}
"$albef" pretrain --config configs/demo.yaml --output_dir "$out" --keep 1 --print_freq 200 "$@"
last=$(ls "$out"/checkpoint_*.pth | sort | tail -n 1)
echo "== zero-shot retrieval of the pretrained model"
"$albef" retrieval --config configs/demo_retrieval.yaml --checkpoint "$last" --output_dir "$out/zero_shot" --evaluate "$@"
echo "== retrieval fine-tuning"
"$albef" retrieval --config configs/demo_retrieval.yaml --checkpoint "$last" --output_dir "$out/retrieval" \
    --keep 1 --print_freq 100 "$@" | grep -v '^epoch [0-9]*: {'
echo "== the fine-tuned model (best epoch on val r_mean)"
"$albef" retrieval --config configs/demo_retrieval.yaml --checkpoint "$out/retrieval/checkpoint_best.pth" \
    --output_dir "$out/retrieval/best" --evaluate "$@"
echo "== VQA fine-tuning from the pretrained model, then answering the test questions"
"$albef" vqa --config configs/demo_vqa.yaml --checkpoint "$last" --output_dir "$out/vqa" --keep 1 \
    --print_freq 100 "$@" | grep -v '^epoch [0-9]*: {'
echo "== ask the fine-tuned VQA model"
"$albef" ask --config configs/demo_vqa.yaml --checkpoint "$(ls "$out"/vqa/checkpoint_*.pth | sort | tail -n 1)" \
    --image data/coco-by/images/000000525891.jpg --question "What color is the sign?" \
    --question "What kind of sign is this?" --top 3 "$@"
echo "logs, loss curves (loss_curve.png) and checkpoints in $out"
