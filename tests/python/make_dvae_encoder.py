"""Writes a small randomly initialised DALL-E dVAE encoder as DALL-E ships
encoder.pkl: the whole module pickled by torch.save(model), its classes named
dall_e.encoder.Encoder, dall_e.encoder.EncoderBlock and dall_e.utils.Conv2d.

The architecture is restated here from DALL-E's description (it is not
DALL-E's code): a 7x7 input conv; four groups of residual blocks at widths
n_hid, 2n_hid, 4n_hid, 8n_hid, each block id_path(x) + res_path(x) / n_layers^2
with res_path relu-conv3-relu-conv3-relu-conv3-relu-conv1 through a quarter of
the block's width and id_path a 1x1 conv when the width changes; a 2x2
max-pool after each of the first three groups; relu and a 1x1 conv to the
vocabulary. Every conv is "same"-padded with weight `w` and bias `b`, drawn
normal(std 1/sqrt(fan_in)) and zero; the biases are then set random here so a
loader that drops them is caught.

usage: make_dvae_encoder.py OUT_DIR INPUTS.npy [--variant normal|tiny|extra_class|os_system|wrong_size|class_in_state]
  normal: OUT_DIR/encoder.pkl (zip format), OUT_DIR/encoder_legacy.pkl (the
          pre-1.6 stream), and for INPUTS.npy ([N, 3, R, R] float32, already
          mapped to [0.1, 0.9]) OUT_DIR/expected_logits.npy and
          OUT_DIR/expected_codes.npy ([N, (R/8)^2] int64 argmax per cell).
  tiny:   OUT_DIR/encoder.pkl and encoder_legacy.pkl of a 4-wide encoder
          with one block per group and 8 codes (fuzz/corpus/module_pickle).
  extra_class: OUT_DIR/encoder.pkl with a torch.nn.Linear inside.
  os_system: OUT_DIR/encoder.pkl whose module holds an attribute that
          pickles as a call of os.system.
  wrong_size: OUT_DIR/encoder.pkl whose Encoder records n_hid 32 for its
          n_hid 16 weights.
  class_in_state: OUT_DIR/encoder.pkl whose Encoder's __dict__ holds a
          "__class__" entry (naming another class).
"""
import math
import os
import sys
import types
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

N_HID, N_BLK_PER_GROUP, VOCAB = 16, 2, 128


class Conv2d(nn.Module):
    def __init__(self, n_in, n_out, kw):
        super().__init__()
        self.n_in, self.n_out, self.kw = n_in, n_out, kw
        self.use_float16 = True
        self.device = torch.device("cpu")
        self.requires_grad = False
        self.w = nn.Parameter(torch.randn(n_out, n_in, kw, kw) / math.sqrt(n_in * kw * kw), requires_grad=False)
        self.b = nn.Parameter(0.1 * torch.randn(n_out), requires_grad=False)

    def forward(self, x):
        return F.conv2d(x, self.w, self.b, padding=(self.kw - 1) // 2)


class EncoderBlock(nn.Module):
    def __init__(self, n_in, n_out, n_layers):
        super().__init__()
        self.n_in, self.n_out, self.n_layers = n_in, n_out, n_layers
        self.device = None
        self.requires_grad = False
        self.n_hid = n_out // 4
        self.post_gain = 1 / (n_layers ** 2)
        self.id_path = Conv2d(n_in, n_out, 1) if n_in != n_out else nn.Identity()
        hid = self.n_hid
        self.res_path = nn.Sequential(OrderedDict([
            ("relu_1", nn.ReLU()), ("conv_1", Conv2d(n_in, hid, 3)),
            ("relu_2", nn.ReLU()), ("conv_2", Conv2d(hid, hid, 3)),
            ("relu_3", nn.ReLU()), ("conv_3", Conv2d(hid, hid, 3)),
            ("relu_4", nn.ReLU()), ("conv_4", Conv2d(hid, n_out, 1)),
        ]))

    def forward(self, x):
        return self.id_path(x) + self.post_gain * self.res_path(x)


class Encoder(nn.Module):
    group_count = 4

    def __init__(self, n_hid, n_blk_per_group, vocab_size, input_channels=3):
        super().__init__()
        self.n_hid, self.n_blk_per_group = n_hid, n_blk_per_group
        self.input_channels, self.vocab_size = input_channels, vocab_size
        self.device = torch.device("cpu")
        self.requires_grad = False
        self.use_mixed_precision = True
        n_layers = self.group_count * n_blk_per_group
        items = [("input", Conv2d(input_channels, n_hid, 7))]
        width = n_hid
        for g in range(1, self.group_count + 1):
            group_width = n_hid * 2 ** (g - 1)
            group = []
            for i in range(1, n_blk_per_group + 1):
                group.append((f"block_{i}", EncoderBlock(width, group_width, n_layers)))
                width = group_width
            if g < self.group_count:
                group.append(("pool", nn.MaxPool2d(kernel_size=2)))
            items.append((f"group_{g}", nn.Sequential(OrderedDict(group))))
        items.append(("output", nn.Sequential(OrderedDict([("relu", nn.ReLU()), ("conv", Conv2d(width, vocab_size, 1))]))))
        self.blocks = nn.Sequential(OrderedDict(items))

    def forward(self, x):
        return self.blocks(x)


class RunsACommand:
    """Pickles as os.system('...'): what a loader must never call."""

    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def register(module_name, **classes):
    module = types.ModuleType(module_name)
    for name, cls in classes.items():
        cls.__module__ = module_name
        cls.__qualname__ = name
        setattr(module, name, cls)
    sys.modules[module_name] = module


register("dall_e")
register("dall_e.encoder", Encoder=Encoder, EncoderBlock=EncoderBlock)
register("dall_e.utils", Conv2d=Conv2d)


def main():
    out_dir, inputs_path = sys.argv[1], sys.argv[2]
    variant = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--variant" else "normal"
    torch.manual_seed(11)
    model = Encoder(4, 1, 8).eval() if variant == "tiny" else Encoder(N_HID, N_BLK_PER_GROUP, VOCAB).eval()
    if variant == "extra_class":
        model.blocks.output.add_module("extra", nn.Linear(2, 2))
    elif variant == "os_system":
        model.blocks.group_1.block_1.note = RunsACommand()
    elif variant == "wrong_size":
        model.n_hid = 32
    elif variant == "class_in_state":
        model.__dict__["__class__"] = "dall_e.utils.Conv2d"
    elif variant not in ("normal", "tiny"):
        sys.exit(f"unknown variant {variant}")
    torch.save(model, os.path.join(out_dir, "encoder.pkl"))
    if variant == "tiny":
        torch.save(model, os.path.join(out_dir, "encoder_legacy.pkl"), _use_new_zipfile_serialization=False)
    if variant != "normal":
        return
    torch.save(model, os.path.join(out_dir, "encoder_legacy.pkl"), _use_new_zipfile_serialization=False)

    images = torch.from_numpy(np.load(inputs_path))
    with torch.no_grad():
        logits = model(images)
    top2 = logits.topk(2, dim=1).values
    margin = (top2[:, 0] - top2[:, 1]).min().item()
    if margin < 1e-4:  # the codes would hang on rounding: change the seed
        sys.exit(f"top-2 logit margin {margin} too small for an exact comparison")
    np.save(os.path.join(out_dir, "expected_logits.npy"), logits.numpy())
    np.save(os.path.join(out_dir, "expected_codes.npy"), logits.argmax(1).flatten(1).numpy())


if __name__ == "__main__":
    main()
