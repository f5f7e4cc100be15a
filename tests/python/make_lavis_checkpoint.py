"""Writes an official ALBEF checkpoint as LAVIS would save the same model.

LAVIS (lavis/models/albef_models) keeps the official module names, but
 - its BERTs (lavis/models/med.py, med_config_albef.json with
   "add_type_embeddings": false) have no token_type_embeddings and add none,
   so the official model's type-0 row is folded into the position embeddings
   (word + position + type0 == word + (position + type0));
 - its runner (runners/runner_base.py, _save_checkpoint) drops every
   parameter that does not require gradients: the momentum encoders'
   parameters (their buffers, queues and position_ids, stay);
 - it stores its own config ({"model": {"arch": ...}, "run": {...}}).

usage: make_lavis_checkpoint.py OFFICIAL.pth LAVIS.pth ARCH
"""
import sys

import torch

source, target, arch = sys.argv[1:4]
checkpoint = torch.load(source, map_location="cpu")
official = checkpoint.get("model", checkpoint)

MOMENTUM = ("visual_encoder_m.", "text_encoder_m.", "vision_proj_m.", "text_proj_m.", "text_decoder_m.", "cls_head_m.")
BUFFERS = ("image_queue", "text_queue", "idx_queue", "queue_ptr")

lavis = {}
for name, tensor in official.items():
    if name.endswith("embeddings.token_type_embeddings.weight"):
        continue
    if name.startswith(MOMENTUM) and not name.endswith("position_ids"):
        continue  # a parameter with requires_grad=False
    if name.endswith("embeddings.position_embeddings.weight"):
        prefix = name[: -len("position_embeddings.weight")]
        tensor = tensor + official[prefix + "token_type_embeddings.weight"][0]
    lavis[name] = tensor.clone()

torch.save(
    {
        "model": lavis,
        "config": {"model": {"arch": arch, "model_type": "base"}, "run": {"task": "retrieval"}},
        "epoch": 5,
    },
    target,
)
