# Type stubs of the albef module (its C++ half, albef._albef, has no Python source).
import os
from typing import Any, Optional, Sequence, Tuple, TypedDict, Union

import numpy as np
import numpy.typing as npt

__version__: str

PathLike = Union[str, os.PathLike[str]]
#: A path, or uint8 RGB pixels [H, W, 3] (np.asarray(pil_image)); [H, W] grey is replicated.
Image = Union[PathLike, npt.NDArray[np.uint8]]
#: One image, a list of them, or an array [N, H, W, 3].
Images = Union[Image, Sequence[Image]]
Texts = Union[str, Sequence[str]]

class Error(RuntimeError):
    """An error albef-cpp reports: bad input (naming the file, line or key) or a broken precondition."""

class Scores(TypedDict):
    itc: npt.NDArray[np.float64]
    itm: npt.NDArray[np.float64]

class Encoding(TypedDict):
    input_ids: npt.NDArray[np.int64]
    attention_mask: npt.NDArray[np.int64]

class Gradcam(TypedDict, total=False):
    map: npt.NDArray[np.float32]
    caption: str
    mode: str
    block_num: int
    words: list[str]
    word_maps: npt.NDArray[np.float32]

class Classification(TypedDict):
    prediction: str
    probabilities: dict[str, float]

class Hit(TypedDict, total=False):
    id: int
    path: str
    itc: float
    itm_logit: float
    itm: float

class Gallery:
    """An image gallery indexed by `albef index` (faiss, normalised ITC image features)."""
    def __init__(self, path: PathLike) -> None: ...
    def search(
        self, queries: npt.ArrayLike, k: int = 10
    ) -> Tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """(scores [M, k], ids [M, k]) of the closest images per query feature, best first; -inf / -1 pad."""
    def path(self, id: int) -> str:
        """The image file of an id."""
    @property
    def paths(self) -> list[str]: ...
    @property
    def dim(self) -> int: ...
    @property
    def kind(self) -> str: ...
    def __len__(self) -> int: ...

class Model:
    """An ALBEF checkpoint loaded for inference, with the official preprocessing."""
    def __init__(
        self,
        config: str,
        checkpoint: PathLike,
        precision: str = "fp32",
        threads: int = 0,
        device: str = "cpu",
        batch_size: int = 32,
        text_encoder: str = "",
        task: str = "auto",
        answer_list: str = "",
    ) -> None: ...
    def embed_images(self, images: Images) -> npt.NDArray[np.float32]:
        """Normalised ITC image features [N, embed_dim], in input order."""
    def embed_texts(self, texts: Texts) -> npt.NDArray[np.float32]:
        """Normalised ITC text features [M, embed_dim]."""
    def score(self, images: Images, texts: Texts) -> Scores:
        """ITC similarity and ITM match probability per (image, text) pair."""
    def tokenize(self, texts: Texts) -> Encoding:
        """input_ids and attention_mask as the model receives them."""
    def search(self, gallery: Gallery, texts: Texts, k: int = 10, rerank: int = 0) -> list[list[Hit]]:
        """The gallery's best images per text; rerank re-orders the ITC top `rerank` by ITM."""
    def gradcam(
        self, image: Image, caption: str, per_word: bool = False, mode: str = "itm", block_num: Optional[int] = None
    ) -> Gradcam:
        """Grad-CAM map [g, g] of the caption over the image (per word piece too with per_word)."""
    def ask(self, image: Image, questions: Texts, k: int = 5) -> Any:
        """VQA: [(answer, probability)] best first; a list of them per question for a list."""
    def classify_ve(self, image: Image, sentences: Texts) -> Any:
        """SNLI-VE: Classification of a sentence (a list of them for a list)."""
    def classify_nlvr(self, left: Image, right: Image, sentences: Texts) -> Any:
        """NLVR2: Classification of a sentence about two images (a list for a list)."""
    @property
    def kind(self) -> str: ...
    @property
    def image_res(self) -> int: ...
    @property
    def embed_dim(self) -> int: ...
    @property
    def config(self) -> str: ...
    @property
    def checkpoint(self) -> str: ...
    @property
    def precision(self) -> str: ...
    @property
    def missing_keys(self) -> list[str]: ...

def load_checkpoint(path: PathLike) -> Any:
    """A `.pth` file as Python objects with numpy arrays (safe unpickler; state_dicts are OrderedDicts)."""

def save_checkpoint(path: PathLike, checkpoint: Any) -> None:
    """Writes dicts/lists/numbers/str/numpy arrays as a `.pth` torch.load reads; atomically."""

def read_image(path: PathLike) -> npt.NDArray[np.uint8]:
    """An image file's RGB pixels [H, W, 3], decoded as the models read files."""
