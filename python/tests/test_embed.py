"""Features, scores and tokens: the module equals `albef embed` bit for bit,
and array images equal the same images by path."""

import json

import numpy as np

import albef
from conftest import CAPTIONS, CHECKPOINT, CONFIG, IMAGES, run_cli


def test_features_equal_albef_embed_bit_for_bit(tmp_path):
    texts = tmp_path / "captions.txt"
    texts.write_text("\n".join(CAPTIONS) + "\n")
    # Batches of 8: the 26 images and 26 captions span several, as a gallery would.
    run_cli("embed", "--config", CONFIG, "--checkpoint", CHECKPOINT, "--threads", 1, "--batch-size", 8,
            *[a for image in IMAGES for a in ("--image", image)], "--texts", texts, "--out", tmp_path / "out")
    m = albef.Model(CONFIG, CHECKPOINT, threads=1, batch_size=8)
    image_feat = m.embed_images(IMAGES)
    text_feat = m.embed_texts(CAPTIONS)
    assert image_feat.dtype == np.float32 and image_feat.shape == (len(IMAGES), 32)
    assert text_feat.shape == (len(CAPTIONS), 32)
    assert np.array_equal(image_feat, np.load(tmp_path / "out" / "image_feat.npy"))
    assert np.array_equal(text_feat, np.load(tmp_path / "out" / "text_feat.npy"))
    np.testing.assert_allclose(np.linalg.norm(image_feat, axis=1), 1, atol=1e-5)


def test_array_images_equal_the_same_images_by_path(model):
    by_path = model.embed_images(IMAGES[:5])
    pixels = [albef.read_image(p) for p in IMAGES[:5]]
    assert pixels[0].dtype == np.uint8 and pixels[0].ndim == 3 and pixels[0].shape[2] == 3
    assert np.array_equal(model.embed_images(pixels), by_path)
    # Mixed in one list, one array alone, a non-contiguous view, and a batch
    # array [N, H, W, 3], each against the same batch by path (a batch's
    # size changes the matmuls' rounding, in the CLI as here).
    assert np.array_equal(model.embed_images([IMAGES[0], pixels[1], IMAGES[2]]), model.embed_images(IMAGES[:3]))
    assert np.array_equal(model.embed_images(pixels[3]), model.embed_images(IMAGES[3]))
    padded = np.zeros((pixels[4].shape[0], pixels[4].shape[1], 4), np.uint8)
    padded[..., :3] = pixels[4]
    assert not padded[..., :3].flags.c_contiguous
    assert np.array_equal(model.embed_images([pixels[4][::-1][::-1], padded[..., :3]]),
                          model.embed_images([IMAGES[4], IMAGES[4]]))
    assert np.array_equal(model.embed_images(np.stack([pixels[0], pixels[0]])), model.embed_images([IMAGES[0]] * 2))


def test_grey_arrays_are_replicated_as_pil_converts_them(model):
    grey = albef.read_image(IMAGES[0])[..., 1].copy()
    rgb = np.repeat(grey[..., None], 3, axis=2)
    assert np.array_equal(model.embed_images(grey), model.embed_images(rgb))


def test_score_pairs_itc_with_the_features_and_itm_as_probabilities(model):
    images, texts = IMAGES[:3], CAPTIONS[:3]
    scores = model.score(images, texts)
    assert set(scores) == {"itc", "itm"}
    expected_itc = (model.embed_images(images) * model.embed_texts(texts)).sum(1)
    np.testing.assert_allclose(scores["itc"], expected_itc, rtol=1e-5, atol=1e-6)
    assert np.all((scores["itm"] > 0) & (scores["itm"] < 1))
    # One image with every text, and the same pairs through `albef score`.
    one = model.score(images[0], texts)
    np.testing.assert_allclose(one["itc"][0], scores["itc"][0], rtol=1e-6)
    _, out, _ = run_cli("score", "--config", CONFIG, "--checkpoint", CHECKPOINT, "--threads", 1, "--json",
                        *[a for i, t in zip(images, texts) for a in ("--image", i, "--text", t)])
    cli = json.loads(out[out.index("["):])
    np.testing.assert_allclose(scores["itm"], [row["itm"] for row in cli], rtol=1e-5)


def test_tokenize_is_what_the_model_receives(model):
    ids = model.tokenize(["A Dog!", "a cat on a sofa"])
    assert ids["input_ids"].dtype == np.int64
    # [CLS] a dog, padded: ALBEF's own tokenizer adds no [SEP] (README, "Text")
    assert ids["input_ids"][0].tolist() == [101, 1037, 3899, 0, 0, 0]
    assert ids["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0], [1] * 6]


def test_bf16_features_are_close_to_fp32():
    fp32 = albef.Model(CONFIG, CHECKPOINT, threads=1).embed_texts(CAPTIONS[:4])
    bf16 = albef.Model(CONFIG, CHECKPOINT, threads=1, precision="bf16").embed_texts(CAPTIONS[:4])
    assert bf16.dtype == np.float32
    assert np.all((fp32 * bf16).sum(1) > 0.99)


def test_model_describes_itself(model):
    assert model.kind == "pretrain"
    assert model.image_res == 32 and model.embed_dim == 32
    assert "kind='pretrain'" in repr(model)
    assert model.missing_keys == []
