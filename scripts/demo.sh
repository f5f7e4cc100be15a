#!/usr/bin/env bash
# The demo: load the bundled tiny checkpoint and score bundled COCO images
# against their own captions and against another image's caption.
set -euo pipefail
cd "$(dirname "$0")/.."
albef=build/albef
images=data/coco-by/images
"$albef" score --config tests/data/tiny/Pretrain.yaml --checkpoint tests/data/tiny/albef_pretrain_tiny.pth \
  --image $images/000000000790.jpg --text "A family is sitting down at a table to have cake." \
  --image $images/000000078499.jpg --text "Horses standing and laying down in the grass on a hill above a lake." \
  --image $images/000000084284.jpg --text "A computer desk topped with an open laptop computer." \
  --image $images/000000107438.jpg --text "A bike parked under a traffic light next to a blue sign." \
  --image $images/000000000790.jpg --text "A bike parked under a traffic light next to a blue sign." \
  --image $images/000000078499.jpg --text "A computer desk topped with an open laptop computer."
