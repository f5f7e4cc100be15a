#!/usr/bin/env bash
# The demo: pretrain a small ALBEF from scratch on the 130 bundled COCO
# image-caption pairs (configs/demo.yaml), evaluate it zero-shot on image-text
# retrieval the official way (ITC top-k, ITM re-rank), then fine-tune it for
# retrieval (configs/demo_retrieval.yaml) and evaluate the best epoch; then
# VQA, NLVR2 (text assignment, then fine-tuning) and visual entailment on
# questions and sentences written for the bundled images, and Grad-CAM heat
# maps of the retrieval model.
set -euo pipefail
# Every training command gets --overwrite so that the demo can be run again:
# an earlier demo's files move to <output_dir>/previous_run_N/ instead of
# being refused (training commands never replace a run silently).
cd "$(dirname "$0")/.."
albef=build/albef
out=${ALBEF_DEMO_DIR:-runs/demo}
"$albef" pretrain --overwrite --config configs/demo.yaml --output_dir "$out" --keep 1 --print_freq 200 "$@"
last=$(ls "$out"/checkpoint_*.pth | sort | tail -n 1)
echo "== zero-shot retrieval of the pretrained model"
"$albef" retrieval --config configs/demo_retrieval.yaml --checkpoint "$last" --output_dir "$out/zero_shot" --evaluate "$@"
echo "== retrieval fine-tuning"
"$albef" retrieval --overwrite --config configs/demo_retrieval.yaml --checkpoint "$last" --output_dir "$out/retrieval" \
    --keep 1 --print_freq 100 "$@" | grep -v '^epoch [0-9]*: {'
echo "== the fine-tuned model (best epoch on val r_mean)"
"$albef" retrieval --config configs/demo_retrieval.yaml --checkpoint "$out/retrieval/checkpoint_best.pth" \
    --output_dir "$out/retrieval/best" --evaluate "$@"
echo "== the same model from Python (import albef): examples/zero_shot_retrieval.py"
PYTHONPATH=build/python /usr/bin/python3 examples/zero_shot_retrieval.py configs/demo_retrieval.yaml \
    "$out/retrieval/checkpoint_best.pth" --images 2
echo "== VQA fine-tuning from the pretrained model, then answering the test questions"
"$albef" vqa --overwrite --config configs/demo_vqa.yaml --checkpoint "$last" --output_dir "$out/vqa" --keep 1 \
    --print_freq 100 "$@" | grep -v '^epoch [0-9]*: {'
echo "== ask the fine-tuned VQA model"
"$albef" ask --config configs/demo_vqa.yaml --checkpoint "$(ls "$out"/vqa/checkpoint_*.pth | sort | tail -n 1)" \
    --image data/coco-by/images/000000525891.jpg --question "What color is the sign?" \
    --question "What kind of sign is this?" --top 3 "$@"
echo "== NLVR2: text-assignment pretraining from the pretrained model, then fine-tuning"
"$albef" pretrain_nlvr --overwrite --config configs/demo_nlvr_pretrain.yaml --checkpoint "$last" --output_dir "$out/nlvr_pretrain" \
    --keep 1 --print_freq 100 "$@" | grep -v '^epoch [0-9]*: {'
"$albef" nlvr --overwrite --config configs/demo_nlvr.yaml --checkpoint "$(ls "$out"/nlvr_pretrain/checkpoint_*.pth | sort | tail -n 1)" \
    --output_dir "$out/nlvr" --keep 1 --print_freq 100 "$@" | grep -v '^epoch [0-9]*: {'
echo "== visual entailment fine-tuning from the pretrained model"
"$albef" ve --overwrite --config configs/demo_ve.yaml --checkpoint "$last" --output_dir "$out/ve" --keep 1 --print_freq 100 "$@" \
    | grep -v '^epoch [0-9]*: {'
"$albef" ve --predict --config configs/demo_ve.yaml --checkpoint "$out/ve/checkpoint_best.pth" \
    --image data/coco-by/images/000000525891.jpg --text "A stop sign on a street beside some red flowers." --text "A park bench sitting next to a covered awning." \
    --text "The people here know each other well." "$@"
echo "== where the fine-tuned retrieval model looks: Grad-CAM heat maps (PNG, .npy and a page)"
"$albef" gradcam --config configs/demo_retrieval.yaml --checkpoint "$out/retrieval/checkpoint_best.pth" \
    --image data/coco-by/images/000000525891.jpg --text "a stop sign" --text "red flowers" --block_num 1 \
    --html --out "$out/gradcam" "$@"
echo "logs, loss curves (loss_curve.png) and checkpoints in $out"
