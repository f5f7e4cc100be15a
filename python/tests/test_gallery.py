"""Galleries written by `albef index`: searched by features as faiss answers,
and by captions as `albef search` answers."""

import json

import numpy as np
import pytest

import albef
from conftest import CAPTIONS, CHECKPOINT, CONFIG, IMAGES, ROOT, run_cli


@pytest.fixture(scope="module")
def gallery_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("gallery") / "coco.index"
    run_cli("index", "--config", CONFIG, "--checkpoint", CHECKPOINT, "--images", ROOT / "data" / "coco-by" / "images",
            "--out", path, "--threads", 1)
    return str(path)


def test_search_by_features_is_the_exact_itc_ranking(model, gallery_path):
    gallery = albef.Gallery(gallery_path)
    assert len(gallery) == len(IMAGES) and gallery.dim == 32 and gallery.kind == "flat"
    queries = model.embed_texts(CAPTIONS[:4])
    scores, ids = gallery.search(queries, k=5)
    assert scores.shape == ids.shape == (4, 5) and ids.dtype == np.int64
    features = model.embed_images(gallery.paths)
    expected = queries @ features.T
    for q in range(4):
        assert ids[q].tolist() == np.argsort(-expected[q], kind="stable")[:5].tolist()
        np.testing.assert_allclose(scores[q], expected[q][ids[q]], rtol=1e-5, atol=1e-6)
    one_scores, one_ids = gallery.search(queries[0], k=5)  # one query [dim]
    assert np.array_equal(one_ids, ids[:1])
    _, padded = gallery.search(queries[:1], k=40)  # more than the gallery holds: faiss's -1
    assert (padded[0, len(IMAGES):] == -1).all() and sorted(padded[0, :len(IMAGES)]) == list(range(len(IMAGES)))
    assert gallery.path(int(ids[0, 0])) in IMAGES
    with pytest.raises(ValueError, match="k must be at least 1"):
        gallery.search(queries, k=0)
    with pytest.raises(ValueError, match=r"queries must be \[M, 32\]"):
        gallery.search(np.zeros((2, 16), np.float32))
    with pytest.raises(IndexError, match="not in the gallery"):
        gallery.path(len(IMAGES))


@pytest.mark.parametrize("rerank", [0, 8])
def test_search_by_captions_as_albef_search(model, gallery_path, rerank):
    captions = CAPTIONS[:3]
    ours = model.search(albef.Gallery(gallery_path), captions, k=4, rerank=rerank)
    _, out, _ = run_cli("search", "--config", CONFIG, "--checkpoint", CHECKPOINT, "--index", gallery_path, "--k", 4,
                        "--rerank", rerank, "--json", "--threads", 1, *captions)
    theirs = json.loads(out[out.index("["):])
    for hits, expected in zip(ours, theirs):
        assert [h["path"] for h in hits] == [r["path"] for r in expected["results"]]
        np.testing.assert_allclose([h["itc"] for h in hits], [r["itc"] for r in expected["results"]], rtol=1e-5)
        assert ("itm" in hits[0]) == bool(rerank)
