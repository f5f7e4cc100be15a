"""Every error case raises the right exception type, with the message the
`albef` command prints for the same input."""

import numpy as np
import pytest

import albef
from conftest import CHECKPOINT, CONFIG, IMAGES, cli_error


def test_missing_files_raise_file_not_found_with_the_cli_message(tmp_path, model):
    missing = str(tmp_path / "missing.pth")
    with pytest.raises(FileNotFoundError) as raised:
        albef.Model(CONFIG, missing)
    assert missing in str(raised.value)
    assert str(raised.value) == cli_error("embed", "--config", CONFIG, "--checkpoint", missing, "--text", "hi",
                                          "--out", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        albef.Model(str(tmp_path / "missing.yaml"), CHECKPOINT)
    image = str(tmp_path / "missing.jpg")
    with pytest.raises(FileNotFoundError) as raised:
        model.embed_images([IMAGES[0], image])
    assert str(raised.value) == cli_error("embed", "--config", CONFIG, "--checkpoint", CHECKPOINT, "--image", image,
                                          "--out", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="no such image index"):
        albef.Gallery(tmp_path / "none.index")
    with pytest.raises(FileNotFoundError):
        albef.load_checkpoint(missing)
    with pytest.raises(FileNotFoundError):
        albef.read_image(image)


def test_bad_files_raise_albef_error_with_the_cli_message(tmp_path, model):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(open(IMAGES[0], "rb").read()[:2000])  # cut short
    with pytest.raises(albef.Error) as raised:
        model.embed_images(str(corrupt))
    assert isinstance(raised.value, RuntimeError)
    assert str(raised.value) == cli_error("embed", "--config", CONFIG, "--checkpoint", CHECKPOINT, "--image", corrupt,
                                          "--out", tmp_path / "out")
    not_a_checkpoint = tmp_path / "notes.pth"
    not_a_checkpoint.write_text("not a checkpoint")
    with pytest.raises(albef.Error, match="notes.pth"):
        albef.load_checkpoint(not_a_checkpoint)
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("image_res: [32\n")
    with pytest.raises(albef.Error, match="bad.yaml"):
        albef.Model(str(bad_config), CHECKPOINT)


def test_bad_arguments_raise_value_error(model):
    with pytest.raises(ValueError, match="HxWx3"):
        model.embed_images(np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        model.embed_images(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="an image is a path or an HxWx3 uint8 array, got int"):
        model.embed_images([3])
    with pytest.raises(ValueError, match="no images"):
        model.embed_images([])
    with pytest.raises(ValueError, match="a text is a str, got bytes"):
        model.embed_texts([b"bytes"])
    with pytest.raises(ValueError, match="as many images as texts"):
        model.score(IMAGES[:2], ["a", "b", "c"])
    with pytest.raises(ValueError, match="batch_size"):
        albef.Model(CONFIG, CHECKPOINT, batch_size=0)
    with pytest.raises(ValueError, match="cannot store the object"):
        albef.save_checkpoint("/tmp/never.pth", {"x": object()})


def test_a_task_the_checkpoint_lacks_names_what_it_needs(model):
    with pytest.raises(albef.Error, match="ask needs a VQA checkpoint.*loaded as a pretrain model"):
        model.ask(IMAGES[0], "What is this?")
    with pytest.raises(albef.Error, match="classify_ve needs a fine-tuned SNLI-VE checkpoint"):
        model.classify_ve(IMAGES[0], "A man.")
    with pytest.raises(albef.Error, match="block_num"):
        model.gradcam(IMAGES[0], "a cake", block_num=1)  # below the fusion layers
    with pytest.raises(albef.Error, match="precision"):
        albef.Model(CONFIG, CHECKPOINT, precision="fp8")
