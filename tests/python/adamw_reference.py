#!/usr/bin/env python3
"""torch.optim.AdamW reference for tests/test_optimizer.cpp.

Usage:
  adamw_reference.py reference DIR
      Runs torch.optim.AdamW for 4 steps over 6 tensors in 2 groups (one
      tensor gets its first gradient at step 3, one never gets one; group 0's
      lr changes before step 2, as a scheduler would) and writes to DIR:
      p{k}.npy (initial values), g{s}_{k}.npy (gradient of step s, when it has
      one), r{s}_{k}.npy (values after step s) and state3.pth
      (optimizer.state_dict() after step 3).
  adamw_reference.py load DIR
      Checks DIR/ours3.pth, the state dict albef-cpp wrote after its step 3:
      it must equal state3.pth in structure, key order and Python types, with
      tensors within 1e-7; a fresh torch.optim.AdamW must accept it in
      load_state_dict and its step 4 must give r4_*.npy.
      Also checks DIR/tiny_ours.pth against the fixture checkpoint's
      'optimizer' and 'lr_scheduler' entries (path in argv[3]), exactly.
Exits 1 with a message at the first difference.
"""
import math
import os
import sys

import numpy as np
import torch

SHAPES = [(4, 3), (5,), (2, 3, 2), (3,), (6,), ()]
GROUP0 = [0, 1]           # {'params', 'weight_decay': 0.0}
GROUP1 = [2, 3, 4, 5]     # {'params', 'weight_decay': 0.05, 'lr': 3e-3}
LATE = 1                  # first gradient at step 3
NEVER = 4                 # never has a gradient
STEPS = 4
TOLERANCE = 1e-7


def has_grad(k, step):
    return k != NEVER and not (k == LATE and step < 3)


def make_optimizer(params):
    optimizer = torch.optim.AdamW([{'params': [params[k] for k in GROUP0], 'weight_decay': 0.0},
                                   {'params': [params[k] for k in GROUP1], 'weight_decay': 0.05, 'lr': 3e-3}],
                                  lr=1e-3)
    for group in optimizer.param_groups:  # what the timm-style scheduler adds
        group.setdefault('initial_lr', group['lr'])
    return optimizer


def npy(directory, name):
    return torch.from_numpy(np.load(os.path.join(directory, name + '.npy')))


def apply_grads(params, directory, step):
    for k, p in enumerate(params):
        p.grad = npy(directory, f'g{step}_{k}') if has_grad(k, step) else None


def reference(directory):
    torch.manual_seed(0)
    params = [torch.randn(shape).requires_grad_() for shape in SHAPES]
    for k, p in enumerate(params):
        np.save(os.path.join(directory, f'p{k}.npy'), p.detach().numpy())
    optimizer = make_optimizer(params)
    for step in range(1, STEPS + 1):
        for k, p in enumerate(params):
            if has_grad(k, step):
                np.save(os.path.join(directory, f'g{step}_{k}.npy'), torch.randn(p.shape).numpy())
        apply_grads(params, directory, step)
        if step == 2:
            optimizer.param_groups[0]['lr'] = 5e-4
        optimizer.step()
        for k, p in enumerate(params):
            np.save(os.path.join(directory, f'r{step}_{k}.npy'), p.detach().numpy())
        if step == 3:
            torch.save(optimizer.state_dict(), os.path.join(directory, 'state3.pth'))


class Mismatch(Exception):
    pass


def compare(ref, cand, path, exact):
    if type(ref) is not type(cand):
        raise Mismatch(f'{path}: type {type(ref).__name__} != {type(cand).__name__}')
    if isinstance(ref, torch.Tensor):
        if ref.dtype != cand.dtype or ref.shape != cand.shape:
            raise Mismatch(f'{path}: {ref.dtype}{list(ref.shape)} != {cand.dtype}{list(cand.shape)}')
        diff = (ref.double() - cand.double()).abs().max().item() if ref.numel() else 0.0
        if diff > (0.0 if exact else TOLERANCE):
            raise Mismatch(f'{path}: values differ by {diff}')
    elif isinstance(ref, dict):
        if list(ref.keys()) != list(cand.keys()):
            raise Mismatch(f'{path}: keys {list(ref.keys())} != {list(cand.keys())}')
        for key in ref:
            compare(ref[key], cand[key], f'{path}[{key!r}]', exact)
    elif isinstance(ref, (list, tuple)):
        if len(ref) != len(cand):
            raise Mismatch(f'{path}: length {len(ref)} != {len(cand)}')
        for i, (a, b) in enumerate(zip(ref, cand)):
            compare(a, b, f'{path}[{i}]', exact)
    elif isinstance(ref, float):
        if not (ref == cand or (math.isnan(ref) and math.isnan(cand))):
            raise Mismatch(f'{path}: {ref!r} != {cand!r}')
    elif ref != cand:
        raise Mismatch(f'{path}: {ref!r} != {cand!r}')


def load(directory, tiny_checkpoint):
    ours = torch.load(os.path.join(directory, 'ours3.pth'), map_location='cpu')
    compare(torch.load(os.path.join(directory, 'state3.pth'), map_location='cpu'), ours, 'state_dict', exact=False)

    # PyTorch resumes from our state dict: step 4 from the step-3 values.
    params = [npy(directory, f'r3_{k}').clone().requires_grad_() for k in range(len(SHAPES))]
    optimizer = make_optimizer(params)
    optimizer.load_state_dict(ours)
    apply_grads(params, directory, 4)
    optimizer.step()
    for k, p in enumerate(params):
        diff = (p.detach().double() - npy(directory, f'r4_{k}').double()).abs().max().item() if p.numel() else 0.0
        if diff > TOLERANCE:
            raise Mismatch(f'step 4 after load_state_dict: parameter {k} differs by {diff}')

    tiny = torch.load(os.path.join(directory, 'tiny_ours.pth'), map_location='cpu')
    reference_checkpoint = torch.load(tiny_checkpoint, map_location='cpu')
    for key in ('optimizer', 'lr_scheduler'):
        compare(reference_checkpoint[key], tiny[key], key, exact=True)


def main(argv):
    if len(argv) >= 3 and argv[1] == 'reference':
        reference(argv[2])
    elif len(argv) >= 4 and argv[1] == 'load':
        try:
            load(argv[2], argv[3])
        except Mismatch as error:
            print(f'MISMATCH {error}')
            return 1
        print('ok')
    else:
        sys.exit(__doc__)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
