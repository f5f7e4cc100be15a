#!/usr/bin/env python3
"""PyTorch-eager side of `albef bench`: times one workload of the official
ALBEF architecture (or SIMLA's, for train_simla_b8; bench/albef_torch.py) on
this machine and writes a JSON.

    pytorch_baseline.py --config CFG --weights W.pth --inputs DIR --workload NAME
        --precision fp32|bf16 --threads N --iters I --warmup W --out OUT.json
        [--outputs DIR] [--k_test K] [--k_test_vqa K] [--autocast_scope run|iter] [--seed S]

The C++ bench starts one process per workload, so the peak memory reported is
that workload's. It is run the way a user of the official code would run it:
eager mode, `torch.set_num_threads(N)`, eval mode + `torch.no_grad()` for
inference, bf16 = `torch.autocast('cpu', dtype=torch.bfloat16)` (weights stay
fp32). For inference one autocast region spans warm-up and timed iterations
(`--autocast_scope run`, as when a user wraps an inference loop), so the fp32
weights are cast to bf16 once, in warm-up; `--autocast_scope iter` enters it
per iteration and pays that cast every time (~0.2 s for the ViT-B). Training
always enters it per step: the weights change, and autocast's cast cache
only lives as long as the region.

Inputs (.npy in DIR, written by the C++ side): images.npy uint8 [N,3,R,R]
(8-bit pixels, as the test transform's resize leaves them; normalised here with
torchvision's ToTensor + Normalize before the timed steps, as the official
DataLoader hands the model floats), text_ids.npy / text_mask.npy int64 [T,30]. The model is built
at resolution R (the config's image_res is overridden, the position
embedding of W is interpolated as Retrieval.py does).

Workloads (rate unit in brackets):
  image_b1, image_b32  ViT + vision_proj feature of the first 1 / 32 images [images/s]
  text_b64             text encoder (mode text) + text_proj feature, 64 texts [texts/s]
  itm_b64              fusion + ITM head of 64 pairs (text i, image i % N); the
                       embeddings are computed before the timed region [pairs/s]
  retrieval            the official evaluation(): all images x all texts, --k_test [queries/s,
                       queries = N + T; `seconds` is one whole evaluation]
  vqa_b16              AlbefVQA.rank_answer (model_vqa.py) for 16 questions against the
                       answer list in DIR (answer_ids.npy / answer_mask.npy), --k_test_vqa
                       candidates each; the question states (ViT + encoder) are computed
                       before the timed region [questions/s]
  nlvr_b16             AlbefNLVR (model_nlvr.py) evaluation forward of 16 sentences, each
                       over two images (the first 16 images, then the next 16) [pairs/s]
  ve_b32               AlbefVE (model_ve.py) evaluation forward of 32 image-sentence
                       pairs [pairs/s]
  gradcam_b16          Grounding.py val()'s Grad-CAM (albef_torch.gradcam, itm mode) of 16
                       image-expression pairs (image i, text i): ViT + multimodal text
                       encoder, ITM score, model.zero_grad(), backward, the map of the
                       cross-attention of layer block_num = fusion_layer + min(2, layers -
                       fusion_layer - 1) (the official default 8 on ALBEF-base) [expressions/s]
  train_b8             AlbefPretrain(momentum=True) training step on the first 8
                       images and the first 25 token columns: pretraining forward
                       (alpha 0.4), backward, AdamW (lr 1e-4, wd 0.02) [samples/s]
  train_grit_b8        the same with AlbefPretrain(momentum=False) and GRIT-VLP's forward
                       (albef_torch.grit_forward: in-batch ITC + consistency, argmax ITM
                       negatives, MLM at GRIT's probability 0.5 without distillation) [samples/s]
  train_simla_b8       the same with SIMLA (albef_torch.SimlaPretrain, built from a SIMLA config
                       such as configs/Pretrain_SIMLA.yaml, and simla_forward: ITC, ITM and MLM
                       on the single-stream BERT, MIM and pseudo-keyword supervision; the five
                       losses summed, as Pretrain.py). The dVAE is not part of the step: each
                       image gets a fixed seeded mask of min(75, round(75/256 x patches)) patches
                       (75 of the 16x16 at 256, as the official MaskingGenerator's count; the
                       patches are random, not blocks) and random visual token ids in [0, 8192) [samples/s]
Inference workloads build the model without the momentum encoders (they take
no part in inference); W may be in pretrain (`text_encoder.bert.*`) or
retrieval (`text_encoder.*`) layout (gradcam_b16 always builds AlbefRetrieval, loading a
pretrain layout as Grounding.py does), or for vqa_b16, nlvr_b16 and ve_b32 in
that task's layout (loaded strictly); for train_simla_b8 a SIMLA pretraining checkpoint (official
layout; ALBEF pretrain weights also load, SIMLA's extra parts then keep PyTorch's init, see
n_missing_keys in the JSON). The vqa_b16 inputs are images.npy and
question_ids.npy / question_mask.npy [16, Lq]. gradcam_b16 runs with autograd on
(the official backward, weight gradients included) inside the no_grad region; under
bf16 its forward is autocast and its backward is not (as train_b8's).

glibc malloc returns tensors above its mmap threshold to the kernel, so large
batches page-fault on every fresh activation; the JSON records the faults per
iteration and any MALLOC_* variables, which the caller may set (for both sides).

The JSON always gets written: a failure inside the workload (e.g. bf16
training) is recorded in "error" and the exit status is still 0, so the caller
reads the JSON rather than a crash. With --outputs DIR the workload's outputs
are saved there as float32 .npy for cross-checking against the C++ side.
"""
import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import sys
import time
import traceback

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import albef_torch as at  # noqa: E402

WORKLOADS = ("image_b1", "image_b32", "text_b64", "itm_b64", "retrieval", "vqa_b16", "nlvr_b16", "ve_b32",
             "gradcam_b16", "train_b8", "train_grit_b8", "train_simla_b8")
TRAINING = ("train_b8", "train_grit_b8", "train_simla_b8")
CLASSIFIERS = {"nlvr_b16": (at.AlbefNLVR, 16, 2), "ve_b32": (at.AlbefVE, 32, 1)}  # class, pairs, images per pair
TRAIN_BATCH, TRAIN_TOKENS, ITM_BATCH, TEXT_BATCH, VQA_QUESTIONS, GRADCAM_PAIRS = 8, 25, 64, 64, 16, 16
# SIMLA's MaskingGenerator masks 75 patches (dataset/caption_dataset.py), of the 16x16 grid at 256.
SIMLA_MASKED_PATCHES, SIMLA_REFERENCE_PATCHES = 75, 256


# ----------------------------------------------------------------------------- measurement helpers

def rss_peak_mb():
    """Peak RSS of this process (ru_maxrss, KiB on Linux) in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def vm_hwm_mb():
    """Current RSS high-water mark from /proc (resettable, unlike ru_maxrss); None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def reset_hwm():
    """Resets the RSS high-water mark so the workload's own peak can be told
    apart from the transient of loading the checkpoint. Returns success."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def blas_library():
    """The BLAS/oneDNN-relevant shared libraries actually mapped (Debian's torch
    reports BLAS_INFO=generic, i.e. whatever libblas the alternatives point to)."""
    names = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1]
                base = os.path.basename(path)
                if "blas" in base or "mkl" in base or "lapack" in base:
                    names.add(os.path.realpath(path))
    except OSError:
        pass
    return sorted(names)


def autocast(precision):
    """bf16 autocast exactly as a user would enable it on CPU; a no-op context for fp32."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=(precision == "bf16"))


def time_iterations(step, warmup, iters):
    """Runs `step` warmup + iters times; returns the per-iteration seconds of the
    timed ones, the resource usage they took (CPU seconds, user+sys, and minor
    page faults) and the last result."""
    result = None
    for _ in range(warmup):
        result = step()
    times = []
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(iters):
        start = time.perf_counter()
        result = step()
        times.append(time.perf_counter() - start)
    after = resource.getrusage(resource.RUSAGE_SELF)
    usage = {"cpu": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
             "sys": after.ru_stime - before.ru_stime, "minflt": after.ru_minflt - before.ru_minflt}
    return times, usage, result


def to_numpy(tensor):
    return tensor.detach().float().contiguous().numpy()


# ----------------------------------------------------------------------------- model

def build_model(args, state, image_res):
    """Builds the model class matching the workload and the weights' layout and
    loads W through albef_torch.load_checkpoint (Retrieval.py's key handling);
    the VQA model loads its own layout strictly."""
    config = at.load_config(args.config)
    config["image_res"] = image_res
    if args.workload == "vqa_b16":
        model = at.AlbefVQA(config)
        return model, config, model.load_state_dict(state, strict=True)
    if args.workload in CLASSIFIERS:
        model = CLASSIFIERS[args.workload][0](config)
        return model, config, model.load_state_dict(state, strict=True)
    train = args.workload in TRAINING
    if args.workload == "train_simla_b8":
        # Any pretraining layout loads: SIMLA's fully; ALBEF's leaves SIMLA's extra parts at PyTorch's init.
        model = at.SimlaPretrain(config)
        msg = at.load_checkpoint(model, {"model": state})
        if any(k.endswith("_m") or "_m." in k for k in msg.missing_keys):
            model.copy_params()
        return model, config, msg
    pretrain_layout = any(k.startswith("text_encoder.bert.") for k in state)
    # Grounding.py's model is model_retrieval.ALBEF whatever the checkpoint's layout.
    model_class = (at.AlbefRetrieval if args.workload == "gradcam_b16"
                   else at.AlbefPretrain if (train or pretrain_layout) else at.AlbefRetrieval)
    model = model_class(config, momentum=args.workload == "train_b8")
    if args.workload == "train_grit_b8":
        model.mlm_probability = 0.5  # GRIT's Pretrain.yaml, on the pretraining config's model
    msg = at.load_checkpoint(model, {"model": state})
    if args.workload == "train_b8" and any(k.endswith("_m") or "_m." in k for k in msg.missing_keys):
        model.copy_params()  # W has no momentum copies: start them as the online weights, as officially
    return model, config, msg


# The official test transform's normalisation (CLIP's statistics), torchvision's float32 steps.
PIXEL_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
PIXEL_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)


def normalize_pixels(pixels):
    """ToTensor + Normalize of uint8 [N, 3, R, R]: float32 [N, 3, R, R]."""
    return pixels.float().div(255).sub_(PIXEL_MEAN).div_(PIXEL_STD)


def load_inputs(folder, texts="text"):
    """images.npy and the `texts` ids and mask (text_* or, for VQA, question_*)."""
    images = normalize_pixels(torch.from_numpy(np.load(os.path.join(folder, "images.npy"))))
    text_ids = torch.from_numpy(np.load(os.path.join(folder, texts + "_ids.npy"))).long()
    text_mask = torch.from_numpy(np.load(os.path.join(folder, texts + "_mask.npy"))).long()
    return images, text_ids, text_mask


def need(tensor, count, what):
    if len(tensor) < count:
        raise ValueError(f"needs {count} {what}, the inputs have {len(tensor)}")
    return tensor[:count]


# ----------------------------------------------------------------------------- workloads
# Each returns (items per iteration, unit, step function, outputs(result) -> {name: array}, extra JSON fields).
# Inference steps are plain calls: run() puts no_grad and autocast around them.

def image_workload(model, images, batch):
    batch_images = need(images, batch, "images").contiguous()

    def step():
        embeds = model.image_embeds(batch_images)
        return embeds, model.image_feat(embeds)

    return batch, "images/s", step, lambda r: {"image_embeds": to_numpy(r[0]), "image_feat": to_numpy(r[1])}, {}


def text_workload(model, text_ids, text_mask):
    ids, mask = need(text_ids, TEXT_BATCH, "texts").contiguous(), text_mask[:TEXT_BATCH].contiguous()

    def step():
        embeds = model.text_embeds(ids, mask)
        return embeds, model.text_feat(embeds)

    return TEXT_BATCH, "texts/s", step, lambda r: {"text_embeds": to_numpy(r[0]), "text_feat": to_numpy(r[1])}, {}


def itm_workload(model, args, images, text_ids, text_mask):
    """Pairs (text i, image i % N); both encoders run before the timed region,
    under the same precision, so only the fusion layers and the head are timed."""
    ids, mask = need(text_ids, ITM_BATCH, "texts").contiguous(), text_mask[:ITM_BATCH].contiguous()
    with torch.no_grad(), autocast(args.precision):
        text_embeds = model.text_embeds(ids, mask)
        image_embeds = model.image_embeds(images)
    pair_images = image_embeds[torch.arange(ITM_BATCH) % len(images)].contiguous()

    def step():
        return model.itm_logits(text_embeds, mask, pair_images)

    return ITM_BATCH, "pairs/s", step, lambda r: {"itm_logits": to_numpy(r)}, {}


def retrieval_workload(model, k_test, images, text_ids, text_mask):
    def step():
        return at.evaluation(model, images, text_ids, text_mask, k_test)

    extra = {"k_test": k_test, "n_images": len(images), "n_texts": len(text_ids)}
    return (len(images) + len(text_ids), "queries/s", step,
            lambda r: {"score_i2t": r[0].astype(np.float32), "score_t2i": r[1].astype(np.float32)}, extra)


def vqa_workload(model, args, images, question_ids, question_mask):
    """VQA.py's evaluation of one batch, from the question states on: rank_answer
    over the whole answer list (the official call, tile() and all)."""
    answer_ids = torch.from_numpy(np.load(os.path.join(args.inputs, "answer_ids.npy"))).long()
    answer_mask = torch.from_numpy(np.load(os.path.join(args.inputs, "answer_mask.npy"))).long()
    mask = need(question_mask, VQA_QUESTIONS, "questions").contiguous()
    with torch.no_grad(), autocast(args.precision):
        states = model.question_states(need(images, VQA_QUESTIONS, "images"), question_ids[:VQA_QUESTIONS], mask)

    def step():
        return model.rank_answer(states, mask, answer_ids, answer_mask, args.k_test_vqa)

    def outputs(result):
        topk_ids, topk_probs, stages = result
        return {"prob_first_token": to_numpy(stages["prob_first_token"]), "topk_probs": to_numpy(topk_probs)}

    extra = {"k_test": args.k_test_vqa, "answers": len(answer_ids), "answer_tokens": int(answer_ids.shape[1]),
             "question_tokens": int(question_ids.shape[1])}
    return VQA_QUESTIONS, "questions/s", step, outputs, extra


def classifier_workload(model, args, images, text_ids, text_mask):
    """NLVR.py / VE.py's evaluate() on one batch: ViT, the multimodal text
    encoder over the pair's image(s), cls_head."""
    _, pairs, per_pair = CLASSIFIERS[args.workload]
    batch_images = need(images, pairs * per_pair, "images").contiguous()
    ids, mask = need(text_ids, pairs, "texts").contiguous(), text_mask[:pairs].contiguous()

    def step():
        return model(batch_images, ids, mask)

    return pairs, "pairs/s", step, lambda r: {"logits": to_numpy(r)}, {}


def gradcam_block(bert):
    """Grounding.py's default block_num 8 on ALBEF-base (the third fusion
    layer); the same place, or the last fusion layer, in smaller models."""
    return bert.fusion_layer + min(2, bert.num_hidden_layers - bert.fusion_layer - 1)


def gradcam_workload(model, images, text_ids, text_mask, config):
    """Grounding.py's val() on one batch in itm mode (image i with expression
    i): the forward, model.zero_grad(), the backward and the map."""
    batch_images = need(images, GRADCAM_PAIRS, "images").contiguous()
    ids, mask = need(text_ids, GRADCAM_PAIRS, "texts").contiguous(), text_mask[:GRADCAM_PAIRS].contiguous()
    block = gradcam_block(config["bert"])

    def step():
        return at.gradcam(model, batch_images, ids, mask, "itm", block)[0]

    extra = {"block_num": block, "gradcam_mode": "itm", "tokens": int(ids.shape[1])}
    return GRADCAM_PAIRS, "expressions/s", step, lambda r: {"gradcam": to_numpy(r)}, extra


def simla_image_targets(model, seed):
    """What SIMLA's data pipeline and dVAE give a training step, drawn once
    from `seed` (a generator of its own, so the step's draws are untouched):
    per image a mask of min(75, round(75/256 x patches)) distinct random
    patches (bool [8, patches]) and visual token ids in [0, 8192) [8, patches]."""
    patches = model.visual_encoder.patch_embed.num_patches
    count = min(SIMLA_MASKED_PATCHES, max(1, round(SIMLA_MASKED_PATCHES * patches / SIMLA_REFERENCE_PATCHES)))
    generator = torch.Generator().manual_seed(seed)
    masked = torch.zeros(TRAIN_BATCH, patches, dtype=torch.bool)
    for row in masked:
        row[torch.randperm(patches, generator=generator)[:count]] = True
    visual_token_ids = torch.randint(at.MIM_VOCAB, (TRAIN_BATCH, patches), generator=generator)
    return masked, visual_token_ids


def train_workload(model, args, images, text_ids, text_mask, config):
    """One Pretrain.py iteration: zero_grad, forward (under autocast for bf16,
    backward outside it, as the autocast docs prescribe), backward, AdamW step."""
    batch_images = need(images, TRAIN_BATCH, "images").contiguous()
    ids = need(text_ids, TRAIN_BATCH, "texts")[:, :TRAIN_TOKENS].contiguous()
    mask = text_mask[:TRAIN_BATCH, :TRAIN_TOKENS].contiguous()
    alpha = float(config.get("alpha", 0.4))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.02)
    first_losses = []
    extra = {}
    if args.workload == "train_simla_b8":
        masked_patches, visual_token_ids = simla_image_targets(model, args.seed)
        extra = {"masked_patches_per_image": int(masked_patches[0].sum()), "patches": int(masked_patches.shape[1]),
                 "psl_layer": model.psl_layer}

    def step():
        optimizer.zero_grad()
        with autocast(args.precision):
            if args.workload == "train_grit_b8":
                losses = at.grit_forward(model, batch_images, ids, mask)[:3]
            elif args.workload == "train_simla_b8":
                losses = at.simla_forward(model, batch_images, ids, mask, masked_patches, visual_token_ids, alpha)
            else:
                losses = model(batch_images, ids, mask, alpha=alpha)
        loss = sum(losses[1:], losses[0])
        loss.backward()
        optimizer.step()
        values = [float(l) for l in losses]
        if not first_losses:
            first_losses.extend(values)
        return values

    extra.update({"alpha": alpha, "tokens": int(ids.shape[1]), "first_step_losses": first_losses,
                  "optimizer": "AdamW(lr=1e-4, weight_decay=0.02), one group"})
    if args.precision == "bf16":
        extra["note"] = ("albef_torch casts the MLM head's LayerNorm input to the weight dtype; the unpatched "
                         "official xbert BertPredictionHeadTransform raises 'expected scalar type BFloat16 but "
                         "found Float' there under CPU autocast (torch 1.13)")
    return (TRAIN_BATCH, "samples/s", step,
            lambda r: {"losses": np.asarray(first_losses, dtype=np.float32)}, extra)


# ----------------------------------------------------------------------------- main

def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--weights", required=True, help="state_dict in official layout (or {'model': ...})")
    parser.add_argument("--inputs", required=True, help="folder with images.npy, text_ids.npy, text_mask.npy")
    parser.add_argument("--workload", required=True, choices=WORKLOADS)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--k_test", type=int, default=16)
    parser.add_argument("--k_test_vqa", type=int, default=128, help="vqa_b16: candidates re-ranked per question")
    parser.add_argument("--autocast_scope", default="run", choices=("run", "iter"),
                        help="inference under bf16: one autocast region for the whole run, or one per iteration")
    parser.add_argument("--out", required=True)
    parser.add_argument("--outputs", help="folder for the workload's outputs as float32 .npy")
    parser.add_argument("--seed", type=int, default=0, help="torch seed (train: negatives, MLM masks, dropout)")
    return parser.parse_args()


def run(args, report):
    """Sets up and times the workload, filling `report`."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    report["threads"] = torch.get_num_threads()

    images, text_ids, text_mask = load_inputs(args.inputs, "question" if args.workload == "vqa_b16" else "text")
    setup_start = time.perf_counter()
    checkpoint = torch.load(args.weights, map_location="cpu")
    state = checkpoint["model"] if "model" in checkpoint else checkpoint
    model, config, msg = build_model(args, state, image_res=images.shape[-1])
    del checkpoint, state
    report.update({"model": type(model).__name__, "image_res": int(images.shape[-1]),
                   "n_missing_keys": len(msg.missing_keys), "missing_keys": msg.missing_keys[:10],
                   "n_unexpected_keys": len(msg.unexpected_keys)})
    train = args.workload in TRAINING
    if train:
        model.train()
        items, unit, step, outputs, extra = train_workload(model, args, images, text_ids, text_mask, config)
    else:
        model.eval()
        if args.workload in ("image_b1", "image_b32"):
            built = image_workload(model, images, int(args.workload[len("image_b"):]))
        elif args.workload == "text_b64":
            built = text_workload(model, text_ids, text_mask)
        elif args.workload == "itm_b64":
            built = itm_workload(model, args, images, text_ids, text_mask)
        elif args.workload == "vqa_b16":
            built = vqa_workload(model, args, images, text_ids, text_mask)
        elif args.workload in CLASSIFIERS:
            built = classifier_workload(model, args, images, text_ids, text_mask)
        elif args.workload == "gradcam_b16":
            built = gradcam_workload(model, images, text_ids, text_mask, config)
        else:
            built = retrieval_workload(model, args.k_test, images, text_ids, text_mask)
        items, unit, step, outputs, extra = built
        if args.autocast_scope == "iter":
            inner = step

            def step():
                with autocast(args.precision):
                    return inner()
        if args.precision == "bf16":
            report["autocast_scope"] = args.autocast_scope
    report.update(extra)
    report["unit"] = unit
    report["setup_seconds"] = time.perf_counter() - setup_start
    report["peak_rss_setup_mb"] = rss_peak_mb()
    report["hwm_reset"] = reset_hwm()

    with contextlib.ExitStack() as scope:
        if not train:
            scope.enter_context(torch.no_grad())
            if args.autocast_scope == "run":
                scope.enter_context(autocast(args.precision))
        times, usage, result = time_iterations(step, args.warmup, args.iters)
    seconds = statistics.median(times)
    # CPU time / (wall time x threads): well below 1 means the threads did not get
    # their cores (another load on the machine), so the timing is not trustworthy.
    report.update({"seconds": seconds, "rate": items / seconds, "items": items, "times": times,
                   "cpu_utilisation": usage["cpu"] / (sum(times) * report["threads"]) if times else None,
                   "sys_seconds_per_iter": usage["sys"] / len(times) if times else None,
                   "page_faults_per_iter": usage["minflt"] / len(times) if times else None})
    if args.outputs:
        os.makedirs(args.outputs, exist_ok=True)
        for name, array in outputs(result).items():
            np.save(os.path.join(args.outputs, name + ".npy"), array)


def main():
    args = parse_args()
    report = {"workload": args.workload, "precision": args.precision, "threads": args.threads,
              "iters": args.iters, "warmup": args.warmup, "seconds": None, "rate": None, "unit": None,
              "peak_rss_mb": None, "error": None, "torch_version": torch.__version__,
              "python": platform.python_version(),
              "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}}
    try:
        run(args, report)
    except Exception as error:  # recorded, not raised: the caller reads the JSON
        report["error"] = f"{type(error).__name__}: {error}"
        report["traceback"] = traceback.format_exc()
        print(report["traceback"], file=sys.stderr)
    # ru_maxrss may have been reset with the high-water mark; the process peak is the larger of both phases.
    report["peak_rss_mb"] = max(rss_peak_mb(), report.get("peak_rss_setup_mb") or 0.0)
    report["peak_rss_run_mb"] = vm_hwm_mb() if report.get("hwm_reset") else None
    report["blas"] = blas_library()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps({k: report.get(k) for k in ("workload", "precision", "threads", "seconds", "rate", "unit",
                                                 "peak_rss_mb", "peak_rss_run_mb", "cpu_utilisation", "error")}))


if __name__ == "__main__":
    main()
