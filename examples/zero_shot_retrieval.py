#!/usr/bin/env python3
"""Zero-shot image-text retrieval over the bundled COCO images, from Python.

    PYTHONPATH=build/python python3 examples/zero_shot_retrieval.py \
        configs/demo_retrieval.yaml runs/demo/retrieval/checkpoint_best.pth

embeds every image and caption of data/coco-by once, ranks the captions of
each image by ITC similarity (a matrix product of the normalised features),
prints the best captions per image (* marks the image's own), and the
recall of both directions, as Retrieval.py's ITC ranking would count it.
Any retrieval or pretraining checkpoint works (the official ALBEF.pth with
configs/Retrieval_coco.yaml too).
"""

import argparse
import json
import pathlib

import numpy as np

import albef

DATA = pathlib.Path(__file__).resolve().parents[1] / "data" / "coco-by"


def recall_at(ranks, k):
    return 100.0 * np.mean(np.asarray(ranks) < k)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="the model's YAML (configs/demo_retrieval.yaml, configs/Retrieval_coco.yaml)")
    parser.add_argument("checkpoint", help="a pretraining or retrieval checkpoint (.pth)")
    parser.add_argument("--top", type=int, default=3, help="captions shown per image")
    parser.add_argument("--images", type=int, default=5, help="images shown (all are ranked)")
    parser.add_argument("--threads", type=int, default=0, help="compute threads (0 = every core)")
    args = parser.parse_args()

    items = json.loads((DATA / "captions.json").read_text())
    image_paths = [str(DATA / item["image"]) for item in items]
    captions = [caption for item in items for caption in item["caption"]]
    owner = np.array([i for i, item in enumerate(items) for _ in item["caption"]])  # caption -> its image

    model = albef.Model(args.config, args.checkpoint, threads=args.threads)
    image_feat = model.embed_images(image_paths)  # [26, 256] at full size
    text_feat = model.embed_texts(captions)       # [130, 256]
    similarity = image_feat @ text_feat.T         # ITC: dot products of normalised features

    for i in range(min(args.images, len(items))):
        print(pathlib.Path(image_paths[i]).name)
        for j in np.argsort(-similarity[i])[: args.top]:
            mark = "*" if owner[j] == i else " "
            print(f"  {mark} {similarity[i, j]:.3f}  {captions[j]}")

    # Rank of each image's best own caption, and of each caption's image.
    image_ranks = [np.where(owner[np.argsort(-similarity[i])] == i)[0][0] for i in range(len(items))]
    text_ranks = [np.where(np.argsort(-similarity[:, j]) == owner[j])[0][0] for j in range(len(captions))]
    print(f"image->text R@1 {recall_at(image_ranks, 1):.1f}  R@5 {recall_at(image_ranks, 5):.1f}  "
          f"text->image R@1 {recall_at(text_ranks, 1):.1f}  R@5 {recall_at(text_ranks, 5):.1f}  "
          f"({len(items)} images, {len(captions)} captions)")


if __name__ == "__main__":
    main()
