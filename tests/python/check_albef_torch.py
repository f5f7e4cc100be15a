#!/usr/bin/env python3
"""Checks bench/albef_torch.py against the official ALBEF code's outputs.

Usage (from the repository root): tests/python/check_albef_torch.py [--skip-full-size]

1. Key names: the official tiny checkpoint loads into AlbefPretrain (with
   momentum) with strict=True and in the same key order; load_checkpoint() into
   AlbefRetrieval gives the official Retrieval.py messages. Unless
   --skip-full-size, the full-size models built from configs/Pretrain.yaml and
   configs/Retrieval_coco.yaml must have exactly the official
   [name, shape, dtype] lists of tests/data/keys/*.json (about 3 GB, ~15 s).
2. interpolate_pos_embed against tests/data/pos_embed/ (exact).
3. Values: in eval mode, the component outputs of both models on the fixture
   inputs must be within 1e-5 (max abs) of tests/data/tiny/npy/eval__comp__*.
4. evaluation() on the 4 fixture pairs, k_test 1, 2, 4: the k best ITC
   candidates of each query hold the ITM match logit of that pair (computed
   here for all 16 pairs), all other entries -100 (within 1e-5).
5. AlbefVQA (the answer decoder) from the tiny checkpoint mapped as VQA.py
   maps it: rank_answer's stages against tests/data/vqa/{literal,scaled}.
6. AlbefNLVR and AlbefVE: eval predictions against tests/data/{nlvr,ve}.
7. The pretraining forward (train mode, alpha 0.4) from the tiny checkpoint:
   with the recorded negatives and MLM masks injected, and again drawn from
   torch.manual_seed(1234) as the official run did, the three losses, the
   queues after the step and the recorded gradients must be within 1e-5.
8. gradcam() (Grounding.py val()) on AlbefRetrieval loaded from the tiny
   checkpoint as Grounding.py loads it: itm at block 3 and itc at block 1
   against tests/data/grounding (the recorded attention, its gradient and the
   map, within 1e-6).
Prints every difference; exits 1 if any check fails.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import albef_torch as at  # noqa: E402

TINY = os.path.join(ROOT, "tests/data/tiny")
TOLERANCE = 1e-5
failures = []


def expect(condition, what):
    print(("ok   " if condition else "FAIL ") + what)
    if not condition:
        failures.append(what)


def fixture(name):
    return torch.from_numpy(np.load(os.path.join(TINY, "npy", name + ".npy")))


def compare(label, ours, name):
    expected = fixture(name)
    if ours.shape != expected.shape:
        expect(False, f"{label}: shape {tuple(ours.shape)} != {tuple(expected.shape)}")
        return
    diff = (ours - expected).abs().max().item()
    expect(diff <= TOLERANCE, f"{label}: max|diff| {diff:.3g} (max|ref| {expected.abs().max().item():.3g})")


def key_list(model):
    return [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in model.state_dict().items()]


def check_keys(args):
    config = at.load_config(os.path.join(TINY, "Pretrain.yaml"))
    state = torch.load(os.path.join(TINY, "albef_pretrain_tiny.pth"), map_location="cpu")["model"]
    pretrain = at.AlbefPretrain(config, momentum=True)
    pretrain.load_state_dict(state, strict=True)  # raises on any missing or unexpected key
    expect(list(pretrain.state_dict()) == list(state), "tiny pretrain: strict load, same key order as the checkpoint")

    retrieval = at.AlbefRetrieval(config, momentum=True)
    msg = at.load_checkpoint(retrieval, os.path.join(TINY, "albef_pretrain_tiny.pth"))
    cls_keys = sorted(k.replace("bert.", "") for k in state if ".cls." in k)
    expect(msg.missing_keys == ["idx_queue"] and sorted(msg.unexpected_keys) == cls_keys,
           f"tiny retrieval (momentum): missing {msg.missing_keys}, {len(msg.unexpected_keys)} unexpected (the MLM heads)")

    if args.skip_full_size:
        return
    for name, model_class, config_file in (("pretrain", at.AlbefPretrain, "configs/Pretrain.yaml"),
                                           ("retrieval", at.AlbefRetrieval, "configs/Retrieval_coco.yaml"),
                                           ("vqa", at.AlbefVQA, "configs/VQA.yaml")):
        with open(os.path.join(ROOT, "tests/data/keys", name + ".json")) as f:
            official = json.load(f)
        model = model_class(at.load_config(os.path.join(ROOT, config_file)), momentum=True)
        ours = key_list(model)
        expect(ours == official, f"full-size {name}: {len(ours)} state_dict entries, same names/shapes/dtypes/order "
                                 f"as the official {len(official)}")
        del model


def check_pos_embed():
    def load(name):
        return torch.from_numpy(np.load(os.path.join(ROOT, "tests/data/pos_embed", name + ".npy")))

    tiny = {"patch_size": 16, "embed_dim": 64, "depth": 0, "num_heads": 2}
    for res in (16, 32, 48, 64):
        ours = at.interpolate_pos_embed(load("tiny_pos_embed_res32"), at.VisionTransformer(res, **tiny))
        expect(torch.equal(ours, load(f"tiny_pos_embed_to_res{res}")), f"pos_embed 2x2 grid -> res {res}: exact")
    ours = at.interpolate_pos_embed(load("random_pos_embed_grid16"), at.VisionTransformer(384, **tiny))
    expect(torch.equal(ours, load("random_pos_embed_grid16_to_grid24")), "pos_embed 16x16 grid -> 24x24: exact")


@torch.no_grad()
def check_values():
    config = at.load_config(os.path.join(TINY, "Pretrain.yaml"))
    checkpoint = os.path.join(TINY, "albef_pretrain_tiny.pth")
    image, ids, mask = fixture("inputs__image"), fixture("inputs__input_ids"), fixture("inputs__attention_mask")
    for label, model in (("pretrain", at.AlbefPretrain(config)), ("retrieval", at.AlbefRetrieval(config))):
        msg = at.load_checkpoint(model, checkpoint)
        expect(not msg.missing_keys, f"{label}: load_checkpoint leaves no key missing")
        model.eval()
        image_embeds = model.image_embeds(image)
        text_embeds = model.text_embeds(ids, mask)
        compare(f"{label} image_embeds", image_embeds, "eval__comp__image_embeds")
        compare(f"{label} image_feat", model.image_feat(image_embeds), "eval__comp__image_feat")
        compare(f"{label} text_embeds", text_embeds, "eval__comp__text_embeds")
        compare(f"{label} text_feat", model.text_feat(text_embeds), "eval__comp__text_feat")
        compare(f"{label} fusion_pos", model.fusion(text_embeds, mask, image_embeds), "eval__comp__fusion_pos")
        compare(f"{label} itm_logits_pos", model.itm_logits(text_embeds, mask, image_embeds),
                "eval__comp__itm_logits_pos")
        if label == "pretrain":
            compare("pretrain mlm_logits sample 0", model.mlm_logits(ids, mask, image_embeds)[0],
                    "eval__comp__mlm_logits_unmasked_sample0")


@torch.no_grad()
def check_evaluation():
    model = at.AlbefRetrieval(at.load_config(os.path.join(TINY, "Pretrain.yaml")))
    at.load_checkpoint(model, os.path.join(TINY, "albef_pretrain_tiny.pth"))
    model.eval()
    image, ids, mask = fixture("inputs__image"), fixture("inputs__input_ids"), fixture("inputs__attention_mask")
    image_embeds, text_embeds = model.image_embeds(image), model.text_embeds(ids, mask)
    sims = model.image_feat(image_embeds) @ model.text_feat(text_embeds).t()
    n = len(image)
    itm = torch.stack([model.itm_logits(text_embeds, mask, image_embeds[i].repeat(n, 1, 1))[:, 1] for i in range(n)])
    for k in (1, 2, 4):
        for direction, scores, query_sims, pair_scores in zip(
                ("i2t", "t2i"), at.evaluation(model, image, ids, mask, k), (sims, sims.t()), (itm, itm.t())):
            expected = torch.full_like(pair_scores, -100.0)
            for q in range(n):
                top = query_sims[q].topk(k).indices
                expected[q, top] = pair_scores[q, top]
            diff = (torch.from_numpy(scores) - expected).abs().max().item()
            expect(diff <= TOLERANCE, f"evaluation k_test {k} {direction}: max|diff| {diff:.3g} to top-k ITM logits")


def check_pretrain_forward():
    config = at.load_config(os.path.join(TINY, "Pretrain.yaml"))
    state = torch.load(os.path.join(TINY, "albef_pretrain_tiny.pth"), map_location="cpu")["model"]
    image, ids, mask = fixture("inputs__image"), fixture("inputs__input_ids"), fixture("inputs__attention_mask")
    injected = {"negatives": (fixture("train__neg_image_idx_per_text"), fixture("train__neg_text_idx_per_image")),
                "masked": (fixture("train__mlm_input_ids_masked"), fixture("train__mlm_labels"))}
    for label, choices in (("injected choices", injected), ("seed 1234", {})):
        model = at.AlbefPretrain(config, momentum=True)
        model.load_state_dict(state, strict=True)
        model.train()
        torch.manual_seed(1234)
        losses = model(image, ids, mask, alpha=0.4, **choices)
        for name, loss in zip(("mlm", "ita", "itm"), losses):
            compare(f"pretrain forward ({label}) loss_{name}", loss.detach(), f"train__loss_{name}")
        compare(f"pretrain forward ({label}) image_queue after", model.image_queue, "train__image_queue_after")
        compare(f"pretrain forward ({label}) text_queue after", model.text_queue, "train__text_queue_after")
        expect(model.queue_ptr.tolist() == fixture("train__queue_ptr_after").tolist(),
               f"pretrain forward ({label}) queue_ptr after {model.queue_ptr.tolist()}")
        sum(losses).backward()
        params = dict(model.named_parameters())
        for name in ("temp", "vision_proj.weight", "text_proj.weight", "itm_head.weight",
                     "visual_encoder.blocks.0.attn.qkv.weight", "visual_encoder.patch_embed.proj.weight",
                     "visual_encoder.pos_embed", "text_encoder.bert.encoder.layer.0.attention.self.query.weight",
                     "text_encoder.bert.encoder.layer.2.crossattention.self.query.weight",
                     "text_encoder.bert.encoder.layer.2.crossattention.self.key.weight",
                     "text_encoder.cls.predictions.bias"):
            compare(f"pretrain forward ({label}) grad {name}", params[name].grad, "train__grad__" + name)


@torch.no_grad()
def check_vqa():
    """AlbefVQA against tests/data/vqa/{literal,scaled}: VQA.py's key mapping
    from the tiny pretraining checkpoint (+ the decoder layers it leaves
    random, recorded in extras_after_load.pth), then rank_answer's stages."""
    for variant, layers in (("literal", 6), ("scaled", 2)):
        folder = os.path.join(ROOT, "tests/data/vqa", variant)
        config = at.load_config(os.path.join(TINY, "Pretrain.yaml"))
        config["decoder_layers"] = layers
        model = at.AlbefVQA(config, momentum=True)
        state = torch.load(os.path.join(TINY, "albef_pretrain_tiny.pth"), map_location="cpu")["model"]
        state = at.vqa_state_from_pretrain(state, first_decoder_layer=layers)
        state.update(torch.load(os.path.join(folder, "extras_after_load.pth"), map_location="cpu"))
        msg = model.load_state_dict(state, strict=False)
        expect(not msg.missing_keys, f"vqa {variant}: the mapped checkpoint + extras leave no key missing")
        model.eval()

        def load(name):
            return torch.from_numpy(np.load(os.path.join(folder, "npy", name + ".npy")))

        mask = load("eval__question_attention_mask")
        states = model.question_states(load("inputs__image_eval"), load("eval__question_input_ids"), mask)
        topk_ids, topk_probs, stages = model.rank_answer(states, mask, load("answers__input_ids"),
                                                         load("answers__attention_mask"), 4)
        for name, ours, recorded in (("prob_first_token", stages["prob_first_token"], "eval__prob_first_token"),
                                     ("answer_loss", stages["answer_loss"], "eval__rank_answer_loss"),
                                     ("log_probs_sum", stages["log_probs_sum"], "eval__log_probs_sum"),
                                     ("topk_probs", topk_probs, "eval__topk_probs")):
            diff = (ours - load(recorded)).abs().max().item()
            expect(diff <= TOLERANCE, f"vqa {variant} {name}: max|diff| {diff:.3g}")
        expect(torch.equal(topk_ids, load("eval__topk_ids")), f"vqa {variant} topk_ids equal")


@torch.no_grad()
def check_nlvr_ve():
    """AlbefNLVR and AlbefVE against tests/data/{nlvr,ve}: the eval predictions
    from the tiny checkpoint converted as the official scripts convert it,
    plus the entries those loads leave random (the fixtures' extras)."""
    state = torch.load(os.path.join(TINY, "albef_pretrain_tiny.pth"), map_location="cpu")["model"]
    config = at.load_config(os.path.join(TINY, "Pretrain.yaml"))
    folder = os.path.join(ROOT, "tests/data/nlvr")

    def load(folder, name):
        return torch.from_numpy(np.load(os.path.join(folder, "npy", name + ".npy")))

    nlvr = at.AlbefNLVR(config)
    ta = at.ta_state_from_pretrain(state, fusion_layer=config["bert"].fusion_layer)
    ta.update(torch.load(os.path.join(folder, "nlvr_extras_after_load.pth"), map_location="cpu"))
    msg = nlvr.load_state_dict(ta, strict=False)
    expect(not msg.missing_keys, f"nlvr: the converted checkpoint + extras leave no key missing {msg.missing_keys[:3]}")
    nlvr.eval()
    ours = nlvr(load(folder, "nlvr__inputs__images"), load(folder, "nlvr__inputs__input_ids"),
                load(folder, "nlvr__inputs__attention_mask"))
    diff = (ours - load(folder, "nlvr__eval__prediction")).abs().max().item()
    expect(diff <= TOLERANCE, f"nlvr eval prediction: max|diff| {diff:.3g}")

    folder = os.path.join(ROOT, "tests/data/ve")
    ve = at.AlbefVE(config)
    plain = {key.replace("bert.", ""): value for key, value in state.items()}
    plain.update(torch.load(os.path.join(folder, "extras_after_load.pth"), map_location="cpu"))
    msg = ve.load_state_dict(plain, strict=False)
    expect(not msg.missing_keys, f"ve: the checkpoint + extras leave no key missing {msg.missing_keys[:3]}")
    ve.eval()
    ours = ve(load(folder, "inputs__image"), load(folder, "inputs__input_ids"), load(folder, "inputs__attention_mask"))
    diff = (ours - load(folder, "eval__prediction")).abs().max().item()
    expect(diff <= TOLERANCE, f"ve eval prediction: max|diff| {diff:.3g}")


def check_gradcam():
    """gradcam() against tests/data/grounding (the official val() on the tiny
    retrieval model; the npy are those of fixtures/grounding). The model keys
    of the fixture's Grounding_tiny.yaml (image_res 32, vision_width 64,
    embed_dim 32, temp 0.07, queue_size 16, vision_config) equal those of
    tiny/Pretrain.yaml. Grounding.py builds the model with momentum copies and
    loads the checkpoint with 'bert.' removed (pos_embeds resized, a no-op at
    res 32); only idx_queue stays missing. Block 3 is the last fusion layer
    (itm), block 1 the last ViT block (itc); both modes on one model, as
    consecutive val() calls would run them."""
    folder = os.path.join(ROOT, "tests/data/grounding")

    def load(name):
        return torch.from_numpy(np.load(os.path.join(folder, "npy", name + ".npy")))

    model = at.AlbefRetrieval(at.load_config(os.path.join(TINY, "Pretrain.yaml")), momentum=True)
    msg = at.load_checkpoint(model, os.path.join(TINY, "albef_pretrain_tiny.pth"))
    expect(msg.missing_keys == ["idx_queue"], f"grounding: Grounding.py's load leaves only {msg.missing_keys} missing")
    model.eval()
    image, ids, mask = load("inputs__image"), load("inputs__input_ids"), load("inputs__attention_mask")
    for mode, block in (("itm", 3), ("itc", 1)):
        maps, attention_map, attn_gradients = at.gradcam(model, image, ids, mask, mode, block)
        for name, ours in (("attention_map", attention_map), ("attn_gradients", attn_gradients), ("gradcam", maps)):
            expected = load(f"{mode}__{name}")
            if ours.shape != expected.shape:
                expect(False, f"gradcam {mode} block {block} {name}: shape {tuple(ours.shape)} "
                              f"!= {tuple(expected.shape)}")
                continue
            diff = (ours - expected).abs().max().item()
            expect(diff <= 1e-6, f"gradcam {mode} block {block} {name}: max|diff| {diff:.3g} "
                                 f"(max|ref| {expected.abs().max().item():.3g})")
    # Back to the normal path: no attention kept, no hook left set.
    kept = [name for name, module in model.named_modules() if getattr(module, "attention_map", None) is not None
            or getattr(module, "save_attention", False)]
    expect(not kept, f"gradcam leaves no attention kept or save_attention set {kept[:3]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-full-size", action="store_true", help="skip building the full-size models")
    args = parser.parse_args()
    torch.set_num_threads(2)
    check_keys(args)
    check_pos_embed()
    check_values()
    check_evaluation()
    check_pretrain_forward()
    check_vqa()
    check_nlvr_ve()
    check_gradcam()
    print(f"{len(failures)} failure(s)" if failures else "all checks passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
