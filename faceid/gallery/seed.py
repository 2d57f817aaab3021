"""The seed project's ``face_embeddings.pkl`` ({name: 512-d array}), read without running any code in it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..core.safe_pickle import NUMPY_ARRAYS, ForbiddenGlobal, restricted_load
from ..model.embeddings import EMBEDDING_DIM
from .names import validate_name
from .records import GalleryError
from .vectors import query_vector


def load_seed_pickle(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read the seed's ``face_embeddings.pkl`` ({name: 512-d array}) safely -> {valid name: (512,) float32}."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = restricted_load(f, NUMPY_ARRAYS)  # the seed's format runs code otherwise
    except FileNotFoundError:
        raise GalleryError(f"The seed pickle {path} does not exist.") from None
    except ForbiddenGlobal as err:
        raise GalleryError(
            f"{path} is not a plain embeddings pickle (it refers to {err}); refusing to load it."
        ) from None
    except Exception as err:  # a damaged pickle raises many types (EOFError, ValueError, struct.error, ...)
        raise GalleryError(f"Cannot read the seed pickle {path}: {type(err).__name__}: {str(err)[:120]}.") from None
    if not isinstance(data, dict):
        raise GalleryError(f"{path} does not hold a {{name: embedding}} dictionary.")
    out: dict[str, np.ndarray] = {}
    for name, vec in data.items():
        arr = np.asarray(vec) if isinstance(vec, np.ndarray) else None
        if arr is None or arr.dtype.kind != "f" or arr.size != EMBEDDING_DIM:
            raise GalleryError(f"The entry {name!r} in {path} is not a {EMBEDDING_DIM}-d float embedding.")
        try:
            out[validate_name(name)] = query_vector(arr)
        except GalleryError as err:
            raise GalleryError(f"Cannot import the entry {ascii(name)} of {path}: {err}") from None
    return out
