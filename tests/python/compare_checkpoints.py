#!/usr/bin/env python3
"""Checks that torch.load reads checkpoints as the same Python objects.

Usage: compare_checkpoints.py REFERENCE CANDIDATE [REFERENCE CANDIDATE ...]

For each pair: the same structure and types (dict vs OrderedDict, list vs
tuple, Tensor vs Parameter), dict keys in the same order, tensors with the
same dtype, shape, stride, storage offset and values, the same groups of
tensors sharing one storage (tied weights), and equal plain values. A set in
the reference may be a list in the candidate: albef-cpp reads sets as lists.
Prints one line per pair; exits 1 at the first difference.
"""
import math
import sys

import torch


class Mismatch(Exception):
    pass


def check(condition, path, what):
    if not condition:
        raise Mismatch(f"{path or '<root>'}: {what}")


def storage_of(tensor):
    storage = tensor.untyped_storage() if hasattr(tensor, "untyped_storage") else tensor.storage()
    return storage.data_ptr()


def same_values(a, b):
    if torch.equal(a, b):
        return True
    # NaN != NaN: equal when NaNs sit at the same places.
    return a.is_floating_point() and bool(((a == b) | (a.isnan() & b.isnan())).all())


def compare(ref, cand, path, groups):
    if isinstance(ref, (set, frozenset)):
        check(isinstance(cand, list) and sorted(ref) == sorted(cand), path, f"{ref!r} != {cand!r}")
        return
    check(type(ref) is type(cand), path, f"type {type(ref).__name__} != {type(cand).__name__}")
    if isinstance(ref, torch.Tensor):
        check(ref.dtype == cand.dtype, path, f"dtype {ref.dtype} != {cand.dtype}")
        check(ref.shape == cand.shape, path, f"shape {tuple(ref.shape)} != {tuple(cand.shape)}")
        check(ref.stride() == cand.stride(), path, f"stride {ref.stride()} != {cand.stride()}")
        check(ref.storage_offset() == cand.storage_offset(), path, "storage offset differs")
        check(same_values(ref, cand), path, "tensor values differ")
        groups[0].setdefault(storage_of(ref), []).append(path)
        groups[1].setdefault(storage_of(cand), []).append(path)
    elif isinstance(ref, dict):
        check(list(ref.keys()) == list(cand.keys()), path, "keys or their order differ")
        for key in ref:
            compare(ref[key], cand[key], f"{path}[{key!r}]", groups)
    elif isinstance(ref, (list, tuple)):
        check(len(ref) == len(cand), path, f"length {len(ref)} != {len(cand)}")
        for i, (a, b) in enumerate(zip(ref, cand)):
            compare(a, b, f"{path}[{i}]", groups)
    elif isinstance(ref, float):
        check(ref == cand or (math.isnan(ref) and math.isnan(cand)), path, f"{ref!r} != {cand!r}")
    else:
        check(ref == cand, path, f"{ref!r} != {cand!r}")


def compare_files(reference, candidate):
    groups = ({}, {})
    compare(torch.load(reference, map_location="cpu"), torch.load(candidate, map_location="cpu"), "", groups)
    shared = [sorted(sorted(paths) for paths in g.values()) for g in groups]
    check(shared[0] == shared[1], "", "tensors share storages differently")


def main(argv):
    if len(argv) < 3 or len(argv) % 2 == 0:
        sys.exit(__doc__)
    for reference, candidate in zip(argv[1::2], argv[2::2]):
        try:
            compare_files(reference, candidate)
        except Mismatch as error:
            print(f"MISMATCH {candidate} vs {reference}: {error}")
            return 1
        print(f"match: {candidate} == {reference}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
