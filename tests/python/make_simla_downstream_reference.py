"""Runs SIMLA's NLVR2 model and its Grad-CAM grounding in PyTorch
(bench/albef_torch.py's restatement of models/simla/nlvr.py and Grounding.py's
val()) on the tiny SIMLA pretraining checkpoint, for albef-cpp to compare with.

NLVR2: the checkpoint converted as Pretrain_NLVR.py converts it
(ta_state_from_pretrain from the doubled layers on) into SimlaNLVR; the
token-type embeddings the SIMLA checkpoint lacks are zeros (albef's choice:
SIMLA.py would take bert-base-uncased's, docs/simla.md); cls_head is drawn
with seed 0. On random images and a padded token batch it writes the
logits, CE(logits, targets) and the gradients of a layer-0 cross-attention
query (unshared, image 0) and of the first doubled pair's shared key.

Grounding: SIMLA's retrieval model loaded as Grounding.py loads it; Grad-CAM
of the itm mode (cross-attention of layer `ITM_BLOCK`) and the itc mode (ViT
block `ITC_BLOCK`) on the same images and texts.

usage: make_simla_downstream_reference.py OUT_DIR   (run from the repository root)
writes OUT_DIR/{images,input_ids,attention_mask,targets,cls_head.0.weight,
cls_head.0.bias,cls_head.2.weight,cls_head.2.bias,nlvr_logits,nlvr_loss,
grad_query,grad_shared_key,gradcam_itm,gradcam_itc}.npy
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import albef_torch as at  # noqa: E402

ITM_BLOCK, ITC_BLOCK = 1, 1


def main(out):
    os.makedirs(out, exist_ok=True)
    config = at.load_config(os.path.join(ROOT, "tests/data/simla/Pretrain_tiny.yaml"))
    checkpoint = torch.load(os.path.join(ROOT, "tests/data/simla/simla_pretrain_tiny.pth"), map_location="cpu")
    state = {key: value.float() if value.is_floating_point() else value for key, value in checkpoint["model"].items()}

    generator = torch.Generator().manual_seed(1)
    res = config["image_res"]
    images = torch.randn(4, 3, res, res, generator=generator)  # first images of both texts, then the second ones
    input_ids = torch.tensor([[101, 1996, 2187, 3746, 3065, 1037, 4937, 1012, 102],
                              [101, 2119, 4871, 2265, 102, 0, 0, 0, 0]])
    attention_mask = (input_ids != 0).long()
    targets = torch.tensor([1, 0])

    torch.manual_seed(0)
    nlvr = at.SimlaNLVR(config).eval()
    converted = at.ta_state_from_pretrain(state, nlvr.doubled_from)
    missing = nlvr.load_state_dict(converted, strict=False).missing_keys
    with torch.no_grad():
        nlvr.text_encoder.embeddings.token_type_embeddings.weight.zero_()
    assert sorted(missing) == ["cls_head.0.bias", "cls_head.0.weight", "cls_head.2.bias", "cls_head.2.weight",
                               "text_encoder.embeddings.token_type_embeddings.weight"], missing
    logits = nlvr(images, input_ids, attention_mask)
    loss = F.cross_entropy(logits, targets)
    loss.backward()
    layers = nlvr.text_encoder.encoder.layer
    first = nlvr.doubled_from
    assert layers[first].crossattention.self.key.weight is layers[first + 1].crossattention.self.key.weight
    assert layers[0].crossattention.self.key.weight is not layers[1].crossattention.self.key.weight

    grounding = at.AlbefRetrieval(config, momentum=True).eval()
    at.load_checkpoint(grounding, checkpoint)
    itm, _, _ = at.gradcam(grounding, images[:2], input_ids, attention_mask, "itm", ITM_BLOCK)
    itc, _, _ = at.gradcam(grounding, images[:2], input_ids, attention_mask, "itc", ITC_BLOCK)

    outputs = {"images": images, "input_ids": input_ids, "attention_mask": attention_mask, "targets": targets,
               "nlvr_logits": logits, "nlvr_loss": loss, "grad_query": layers[0].crossattention.self.query.weight.grad,
               "grad_shared_key": layers[first + 1].crossattention.self.key.weight.grad,
               "gradcam_itm": itm, "gradcam_itc": itc}
    for name, parameter in nlvr.cls_head.state_dict().items():
        outputs["cls_head." + name] = parameter
    for name, value in outputs.items():
        np.save(os.path.join(out, name + ".npy"), value.detach().numpy())


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
