#!/usr/bin/env python3
"""How far bf16 and int8 features are from fp32, on the bundled COCO images
and captions, through the Python module:

    PYTHONPATH=build/python python3 bench/int8_accuracy.py CONFIG CHECKPOINT

prints, per precision, the cosine of each image's and caption's feature to
its fp32 feature (min and mean), and the ITC-only recall of the bundled
set (R@1/5/10, both directions) that each precision's features give."""

import argparse
import json
import pathlib

import numpy as np

import albef

DATA = pathlib.Path(__file__).resolve().parents[1] / "data" / "coco-by"


def recalls(image_feat, text_feat, owner):
    similarity = image_feat @ text_feat.T
    i2t = [np.where(owner[np.argsort(-similarity[i], kind="stable")] == i)[0][0] for i in range(len(image_feat))]
    t2i = [np.where(np.argsort(-similarity[:, j], kind="stable") == owner[j])[0][0] for j in range(len(text_feat))]
    return {f"{name}_r{k}": round(100.0 * float(np.mean(np.asarray(ranks) < k)), 1)
            for name, ranks in (("i2t", i2t), ("t2i", t2i)) for k in (1, 5, 10)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--precision", action="append", choices=("bf16", "int8"),
                        help="compare this precision to fp32 (repeatable; default both: bf16 is emulated, and "
                             "slow, on CPUs without AVX-512 BF16)")
    args = parser.parse_args()
    items = json.loads((DATA / "captions.json").read_text())
    images = [str(DATA / item["image"]) for item in items]
    captions = [c for item in items for c in item["caption"]]
    owner = np.array([i for i, item in enumerate(items) for _ in item["caption"]])
    report = {}
    reference = None
    for precision in ["fp32"] + (args.precision or ["bf16", "int8"]):
        m = albef.Model(args.config, args.checkpoint, precision=precision, threads=args.threads, task="retrieval")
        feats = (m.embed_images(images), m.embed_texts(captions))
        row = recalls(*feats, owner)
        if reference is None:
            reference = feats
        else:
            for name, ours, theirs in (("image", feats[0], reference[0]), ("text", feats[1], reference[1])):
                cosine = (ours * theirs).sum(1)
                row[f"{name}_cosine_min"] = round(float(cosine.min()), 5)
                row[f"{name}_cosine_mean"] = round(float(cosine.mean()), 5)
        report[precision] = row
        print(precision, json.dumps(row))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
