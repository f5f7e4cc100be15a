#!/usr/bin/env python3
"""Reference retrieval scores and recalls from the official evaluation, in PyTorch.

Usage:
  retrieval_eval_reference.py --config CFG --checkpoint CKPT --inputs DIR --out DIR [--k_test K]

Reads from the inputs DIR: images.npy (float32 [N,3,H,W], already normalised),
text_ids.npy and text_mask.npy (int64 [T,L]), txt2img.json (text index ->
image index) and img2txt.json (image index -> list of text indices). Builds
AlbefRetrieval from CFG without momentum encoders, loads CKPT as Retrieval.py
does, and runs Retrieval.py's evaluation() and itm_eval() (bench/albef_torch.py)
in fp32 on 2 threads. k_test defaults to the config's; images are encoded in
batches of the config's batch_size_test (64 if absent). Writes to the out DIR:
score_i2t.npy [N,T], score_t2i.npy [T,N] (float32) and metrics.json.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bench"))
import albef_torch as at  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--k_test", type=int)
    args = parser.parse_args()
    torch.set_num_threads(2)

    config = at.load_config(args.config)
    k_test = args.k_test if args.k_test is not None else config["k_test"]
    model = at.AlbefRetrieval(config)
    msg = at.load_checkpoint(model, args.checkpoint)
    print(f"loaded {args.checkpoint}: missing {msg.missing_keys}, {len(msg.unexpected_keys)} unexpected keys")
    model.eval()

    def read(name):
        return torch.from_numpy(np.load(os.path.join(args.inputs, name)))

    def read_json(name):
        with open(os.path.join(args.inputs, name)) as f:
            return json.load(f)

    images, text_ids, text_mask = read("images.npy"), read("text_ids.npy"), read("text_mask.npy")
    txt2img, img2txt = read_json("txt2img.json"), read_json("img2txt.json")
    score_i2t, score_t2i = at.evaluation(model, images, text_ids, text_mask, k_test,
                                         image_batch=config.get("batch_size_test", 64))
    metrics = at.itm_eval(score_i2t, score_t2i, txt2img, img2txt)

    os.makedirs(args.out, exist_ok=True)
    np.save(os.path.join(args.out, "score_i2t.npy"), score_i2t.astype(np.float32))
    np.save(os.path.join(args.out, "score_t2i.npy"), score_t2i.astype(np.float32))
    with open(os.path.join(args.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=1)
    print(json.dumps(metrics))


if __name__ == "__main__":
    main()
