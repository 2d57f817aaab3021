"""Folders of people (``<root>/<Name>/*.jpg``) as the evaluator reads them: every image, and whose it is.

`load_people` turns a folder into a `Dataset` of image paths (no pairs) with an identity index per image;
`embed_people` embeds them through the evaluator's pipeline and cache (`evaluator.embed_items`), so a folder
embedded once costs nothing the next time, whichever run reads it.

Neighbours: the two runs on folders of people, `open_set` (1:N identification) and `calibrate` (a score->FAR
table); `pairs` is the pair-set counterpart.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..core.decode import IMAGE_EXTENSIONS
from ..core.errors import FaceIDError
from .embed_cache import EmbedCache
from .evaluator import embed_items
from .pairs import Dataset


def load_people(root: str | os.PathLike) -> tuple[Dataset, np.ndarray, list[str]]:
    """Every image under <root>/<Name>/ -> (dataset of image paths, identity index per image, names)."""
    root = Path(root)
    if not root.is_dir():
        raise FaceIDError(f"The image root {root} is not a directory of <Name>/ folders.")
    names: list[str] = []
    items: list[Path] = []
    labels: list[int] = []
    for person in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(f for f in person.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
        if files:
            labels += [len(names)] * len(files)
            names.append(person.name)
            items += files
    if len(names) < 2:
        raise FaceIDError(
            f"{root} holds images of {len(names)} people; 1:N evaluation and calibration need at least 2."
        )
    empty = np.zeros((0, 2), np.int64)
    dataset = Dataset(
        "people",
        root.name,
        items,
        empty,
        np.zeros(0, bool),
        np.zeros(0, np.int64),
        {"image_root": str(root), "people": len(names), "images": len(items)},
    )
    return dataset, np.array(labels, np.int64), names


def embed_people(backend, dataset: Dataset, cache: EmbedCache | None, batch_size: int, progress: bool):
    """Every image of the folder through the evaluator (and its cache) -> (embeddings, speed stats, detector
    misses): the one way both the 1:N run and calibration embed people, and count the faces not found."""
    emb, infos, stats = embed_items(backend, dataset, cache, batch_size, progress=progress)
    return emb, stats, sum(1 for i in infos if i.get("detected") is False)
