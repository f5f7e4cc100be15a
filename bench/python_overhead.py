#!/usr/bin/env python3
"""One side of `albef bench --suite python`: times albef.Model.embed_texts on
the captions of a file (one per line) and prints {"ms": median per call}."""

import argparse
import json
import statistics
import time

import albef

parser = argparse.ArgumentParser()
for flag in ("--config", "--checkpoint", "--captions", "--precision"):
    parser.add_argument(flag, required=True)
parser.add_argument("--threads", type=int, default=0)
parser.add_argument("--iters", type=int, default=10)
args = parser.parse_args()

captions = open(args.captions, encoding="utf-8").read().splitlines()
model = albef.Model(args.config, args.checkpoint, precision=args.precision, threads=args.threads,
                    batch_size=len(captions), task="retrieval")
model.embed_texts(captions)  # warm-up, as the C++ side
times = []
for _ in range(args.iters):
    start = time.perf_counter()
    model.embed_texts(captions)
    times.append(time.perf_counter() - start)
print(json.dumps({"ms": 1000 * statistics.median(times)}))
