"""Shared fixtures of the module's tests: the tiny official-parity model
(tests/data/tiny), the bundled COCO images, and the `albef` command to
compare with. ctest sets PYTHONPATH and ALBEF_CLI; run by hand,
`python3 -m pytest python/tests` finds build/ beside the sources."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("ALBEF_BUILD_DIR", ROOT / "build"))
if str(BUILD / "python") not in sys.path:
    sys.path.insert(0, str(BUILD / "python"))

import albef  # noqa: E402

CLI = os.environ.get("ALBEF_CLI", str(BUILD / "albef"))
TINY = ROOT / "tests" / "data" / "tiny"
CONFIG = str(TINY / "Pretrain.yaml")
CHECKPOINT = str(TINY / "albef_pretrain_tiny.pth")
IMAGES = sorted(str(p) for p in (ROOT / "data" / "coco-by" / "images").glob("*.jpg"))
CAPTIONS = [c for item in json.loads((ROOT / "data" / "coco-by" / "captions.json").read_text()) for c in item["caption"][:1]]


def run_cli(*args, check=True):
    """Runs `albef ARGS...`; returns (returncode, stdout, stderr)."""
    done = subprocess.run([CLI, *map(str, args)], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise AssertionError(f"albef {' '.join(map(str, args))} failed:\n{done.stdout}\n{done.stderr}")
    return done.returncode, done.stdout, done.stderr


def cli_error(*args):
    """The one-line message `albef` prints for a failing command."""
    code, _, stderr = run_cli(*args, check=False)
    assert code != 0, f"albef {' '.join(map(str, args))} did not fail"
    line = stderr.strip().splitlines()[-1]
    return line.removeprefix("albef: error: ")


@pytest.fixture(scope="session")
def model():
    return albef.Model(CONFIG, CHECKPOINT, threads=1)


def with_classifier(tmp_path_factory, classes, name):
    """The tiny pretraining checkpoint plus a random cls_head of `classes`
    outputs: what VE.py or NLVR.py would fine-tune from it, written with
    save_checkpoint."""
    checkpoint = albef.load_checkpoint(CHECKPOINT)
    state = checkpoint["model"]
    width = state["text_encoder.bert.embeddings.word_embeddings.weight"].shape[1]
    rng = np.random.default_rng(classes)
    state["cls_head.0.weight"] = rng.normal(0, 0.2, (width, width)).astype(np.float32)
    state["cls_head.0.bias"] = rng.normal(0, 0.2, width).astype(np.float32)
    state["cls_head.2.weight"] = rng.normal(0, 0.5, (classes, width)).astype(np.float32)
    state["cls_head.2.bias"] = rng.normal(0, 0.5, classes).astype(np.float32)
    path = tmp_path_factory.mktemp(name) / f"{name}.pth"
    albef.save_checkpoint(path, {"model": state})
    return str(path)


@pytest.fixture(scope="session")
def ve_checkpoint(tmp_path_factory):
    return with_classifier(tmp_path_factory, 3, "ve")


@pytest.fixture(scope="session")
def nlvr_checkpoint(tmp_path_factory):
    return with_classifier(tmp_path_factory, 2, "nlvr")
