"""albef-cpp for Python: ALBEF (Li et al., NeurIPS 2021) without PyTorch.

    import albef
    m = albef.Model("configs/Retrieval_coco.yaml", "ALBEF.pth", precision="bf16", threads=8)
    image_feat = m.embed_images(["a.jpg", "b.jpg"])     # float32 [2, 256], normalised
    text_feat = m.embed_texts(["a dog on a sofa"])     # float32 [1, 256]
    scores = m.score(["a.jpg"], ["a dog on a sofa"])    # {'itc': [...], 'itm': [...]}
    scores, ids = albef.Gallery("gallery.index").search(text_feat, k=10)

The models run in albef-cpp's C++ core (LibTorch); arrays are numpy's.
Errors raise albef.Error (a RuntimeError), FileNotFoundError or ValueError
with the message the `albef` command prints.
"""

from ._albef import (
    Error,
    Gallery,
    Model,
    __version__,
    load_checkpoint,
    read_image,
    save_checkpoint,
)

__all__ = ["Error", "Gallery", "Model", "load_checkpoint", "read_image", "save_checkpoint", "__version__"]
