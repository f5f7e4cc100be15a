"""VQA answers, SNLI-VE and NLVR2 classes and Grad-CAM maps: the module gives
what `albef ask`, `albef ve --predict`, `albef nlvr --predict` and
`albef gradcam` give."""

import json

import numpy as np
import pytest

import albef
from conftest import CHECKPOINT, CONFIG, IMAGES, ROOT, TINY, run_cli

ANSWERS = str(ROOT / "tests" / "data" / "vqa" / "scaled" / "answer_list.json")
QUESTIONS = ["How many people are at the table?", "What color is the sign?"]


def ve_config(tmp_path):
    # VE.yaml's keys the model reads (the tiny widths of Pretrain.yaml).
    path = tmp_path / "VE_tiny.yaml"
    path.write_text(f"bert_config: '{TINY / 'config_bert.json'}'\nimage_res: 32\n"
                    "vision_config: {patch_size: 16, embed_dim: 64, depth: 2, num_heads: 2, mlp_ratio: 4}\n")
    return str(path)


def test_ask_ranks_the_answer_list_as_albef_ask(tmp_path):
    # VQA.py's conversion of a pretraining checkpoint: its answer decoder copies the fusion layers.
    m = albef.Model(str(TINY / "VQA.yaml"), CHECKPOINT, task="vqa", answer_list=ANSWERS, threads=1)
    assert m.kind == "vqa"
    answers = m.ask(IMAGES[0], QUESTIONS, k=3)
    _, out, _ = run_cli("ask", "--config", TINY / "VQA.yaml", "--checkpoint", CHECKPOINT, "--answers", ANSWERS,
                        "--image", IMAGES[0], *[a for q in QUESTIONS for a in ("--question", q)],
                        "--top", 3, "--json", "--threads", 1)
    cli = json.loads(out[out.index("["):])
    assert len(answers) == 2
    for ours, theirs in zip(answers, cli):
        assert [a for a, _ in ours] == [a["answer"] for a in theirs["answers"]]
        np.testing.assert_allclose([p for _, p in ours], [a["probability"] for a in theirs["answers"]], rtol=1e-6)
    one = m.ask(albef.read_image(IMAGES[0]), QUESTIONS[0], k=3)  # one question: one ranking
    assert [a for a, _ in one] == [a for a, _ in answers[0]]
    assert all(isinstance(p, float) for _, p in one)


def test_classify_ve_as_albef_ve_predict(tmp_path, ve_checkpoint):
    config = ve_config(tmp_path)
    m = albef.Model(config, ve_checkpoint, threads=1, task="ve")
    sentences = ["There are umbrellas.", "A dog sleeps."]
    ours = m.classify_ve(IMAGES[1], sentences)
    _, out, _ = run_cli("ve", "--predict", "--config", config, "--checkpoint", ve_checkpoint, "--image", IMAGES[1],
                        *[a for s in sentences for a in ("--text", s)], "--json", "--threads", 1)
    cli = json.loads(out[out.index("["):])
    for row, theirs in zip(ours, cli):
        assert row["prediction"] == theirs["prediction"]
        assert set(row["probabilities"]) == {"contradiction", "neutral", "entailment"}
        for name, p in theirs["probabilities"].items():
            assert row["probabilities"][name] == pytest.approx(p, rel=1e-6)
    assert m.classify_ve(IMAGES[1], sentences[0]) == ours[0]


def test_classify_nlvr_as_albef_nlvr_predict(tmp_path, nlvr_checkpoint):
    config = ve_config(tmp_path)
    m = albef.Model(config, nlvr_checkpoint, threads=1, task="nlvr")
    sentence = "The left image has more people than the right."
    ours = m.classify_nlvr(IMAGES[0], albef.read_image(IMAGES[2]), [sentence])
    _, out, _ = run_cli("nlvr", "--predict", "--config", config, "--checkpoint", nlvr_checkpoint, "--image", IMAGES[0],
                        "--image", IMAGES[2], "--text", sentence, "--json", "--threads", 1)
    theirs = json.loads(out[out.index("["):])[0]
    assert ours[0]["prediction"] == theirs["prediction"]
    assert ours[0]["probabilities"]["True"] == pytest.approx(theirs["probabilities"]["True"], rel=1e-6)


def test_gradcam_maps_as_albef_gradcam(tmp_path, model):
    caption = "A family sitting at a table with cake"
    cam = model.gradcam(IMAGES[0], caption, per_word=True, block_num=3)
    run_cli("gradcam", "--config", CONFIG, "--checkpoint", CHECKPOINT, "--image", IMAGES[0], "--text", caption,
            "--block_num", 3, "--per-word", "--out", tmp_path / "cam", "--threads", 1)
    manifest = json.loads((tmp_path / "cam" / "gradcam.json").read_text())[0]
    assert cam["map"].shape == (2, 2) and cam["map"].dtype == np.float32  # 32 px / 16 px patches
    np.testing.assert_allclose(cam["map"], np.load(tmp_path / "cam" / manifest["map"]), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(cam["word_maps"], np.load(tmp_path / "cam" / manifest["words_map"]), rtol=1e-5,
                               atol=1e-8)
    assert cam["words"] == [w["piece"] for w in manifest["words"]]
    assert cam["words"][:3] == ["a", "family", "sitting"]
    assert model.gradcam(IMAGES[0], caption)["block_num"] == 3  # the default: the third fusion layer, or the last
    itc = model.gradcam(IMAGES[0], caption, mode="itc")
    assert itc["map"].shape == (2, 2) and "words" not in itc
