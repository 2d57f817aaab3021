"""Pair sets: LFW pair lists (View 1 and View 2) and insightface verification ``.bin`` files -> a `Dataset`.

A `Dataset` is what the evaluator embeds (`evaluator.embed_items`): the unique images (paths, or JPEG bytes
for a .bin), each pair as two indices into them, the labels and the fold of every pair. Both the evaluator
and training's validation load .bin files here, so the two report the same numbers for the same file and
weights (tests/eval/test_evaluate.py checks it). Folders of people are a `Dataset` too (`people`).

Formats: LFW pair lists (View 1's single count header, View 2's ``folds<TAB>pairs`` header) and
insightface's verification ``.bin`` (a pickle of (list of JPEG bytes, list of bool)), read with an
unpickler that allows no globals, so a hostile file cannot run code. The metrics on the scored pairs are
in `verification_metrics`.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import FaceIDError
from ..core.safe_pickle import ForbiddenGlobal, restricted_load
from .verification_metrics import stratified_folds

# ----------------------------------------------------------------------------- LFW pair lists


@dataclass(frozen=True)
class Pair:
    name1: str
    num1: int
    name2: str
    num2: int
    same: bool
    fold: int

    def paths(self, root: str | os.PathLike) -> tuple[Path, Path]:
        root = Path(root)
        return (
            root / self.name1 / f"{self.name1}_{self.num1:04d}.jpg",
            root / self.name2 / f"{self.name2}_{self.num2:04d}.jpg",
        )


def read_pairs(path: str | os.PathLike) -> list[Pair]:
    """Parse an LFW pairs file: View 1 (header "N") or View 2 (header "folds<TAB>N").

    View 1 files hold N matched then N mismatched pairs (one set: it gets 10 stratified folds, for
    10-fold accuracy); View 2 holds, per fold, N matched then N mismatched. Pairs carry their fold.
    """
    path = Path(path)
    try:
        lines = [ln.split() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise FaceIDError(f"Cannot read the pairs file {path}: {err}.") from None
    try:
        header = [int(v) for v in lines[0]]
        folds, per_kind = (1, header[0]) if len(header) == 1 else (header[0], header[1])
    except (IndexError, ValueError):
        raise FaceIDError(f"{path} does not start with an LFW pairs header ('N' or 'folds<TAB>N').") from None
    body = lines[1:]
    if len(body) != folds * per_kind * 2:
        raise FaceIDError(f"{path}: the header promises {folds * per_kind * 2} pairs but {len(body)} lines follow.")
    pairs = []
    for i, parts in enumerate(body):
        fold = i // (2 * per_kind) if folds > 1 else (i % per_kind) * 10 // per_kind
        try:
            if len(parts) == 3:
                pairs.append(Pair(parts[0], int(parts[1]), parts[0], int(parts[2]), True, fold))
            elif len(parts) == 4:
                pairs.append(Pair(parts[0], int(parts[1]), parts[2], int(parts[3]), False, fold))
            else:
                raise ValueError
        except ValueError:
            raise FaceIDError(f"{path}, line {i + 2}: expected 'name n1 n2' or 'name1 n1 name2 n2'.") from None
    return pairs


# ----------------------------------------------------------------------------- pair sets (evaluator and training validation)


@dataclass
class Dataset:
    """Pairs to score. items: unique image paths (pairs files) or JPEG bytes (.bin); index: (P, 2) into items;
    labels: (P,) bool, True = same person; folds: (P,) int fold of each pair."""

    kind: str  # "lfw-pairs", "verification-bin", or "people" (a folder of people: images only, no pairs)
    name: str  # file stem, used to name the outputs
    items: list
    index: np.ndarray
    labels: np.ndarray
    folds: np.ndarray
    describe: dict = field(default_factory=dict)


def _take_limit(labels: np.ndarray, limit: int | None) -> np.ndarray:
    """Indices of the first ceil(limit/2) genuine and floor(limit/2) impostor pairs (all when limit is None)."""
    if not limit or limit >= len(labels):
        return np.arange(len(labels))
    if limit < 2:
        raise FaceIDError(
            f"The pair limit must be at least 2 (one genuine and one impostor pair), got {limit}.", "limit"
        )
    genuine, impostor = np.nonzero(labels)[0], np.nonzero(~labels)[0]
    return np.sort(np.r_[genuine[: (limit + 1) // 2], impostor[: limit // 2]])


def _is_view2(path: Path) -> bool:
    """True when the pairs file's header is View 2's ``folds<TAB>N`` (read_pairs has already validated it)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return len(f.readline().split()) == 2


def load_pairs_dataset(
    pairs_path: str | os.PathLike, image_root: str | os.PathLike, folds: int = 10, limit: int | None = None
) -> Dataset:
    """Parse the pairs file and check every image exists (before any model is loaded).

    Folds: a View 2 file used whole keeps its own folds; View 1, or any subset, is cut into `folds`
    stratified folds (genuine and impostor pairs each in file order), as ``verification_metrics.stratified_folds`` documents.
    """
    pairs_path, root = Path(pairs_path), Path(image_root)
    if not root.is_dir():
        raise FaceIDError(
            f"The image root {root} is not a directory; pass the folder that holds <Name>/<Name>_NNNN.jpg."
        )
    pairs = read_pairs(pairs_path)
    if not pairs:
        raise FaceIDError(f"{pairs_path} lists no pairs.")
    labels = np.array([p.same for p in pairs], dtype=bool)
    if labels.all() or not labels.any():
        raise FaceIDError(f"{pairs_path} needs both same-person and different-person pairs.")
    keep = _take_limit(labels, limit)
    whole = len(keep) == len(labels)
    pairs, labels = [pairs[i] for i in keep], labels[keep]
    view2 = _is_view2(pairs_path)
    if view2 and whole:
        fold_ids = np.array([p.fold for p in pairs])
    else:
        fold_ids = stratified_folds(labels, folds)
    paths: dict[Path, int] = {}
    index = np.array(
        [[paths.setdefault(a, len(paths)), paths.setdefault(b, len(paths))] for a, b in (p.paths(root) for p in pairs)],
        dtype=np.int64,
    )
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FaceIDError(
            f"{len(missing)} of the {len(paths)} images named by {pairs_path} are missing under "
            f"{root} (first: {missing[0]}); check the image folder.",
            "images",
        )
    describe = {
        "pairs_file": str(pairs_path),
        "image_root": str(root),
        "header": "View 2 (folds<TAB>N)" if view2 else "View 1 (single count)",
        "folds": int(len(np.unique(fold_ids))),
        "fold_source": "the file's own folds" if view2 and whole else "stratified, in file order",
    }
    return Dataset("lfw-pairs", pairs_path.stem, list(paths), index, labels, fold_ids, describe)


def load_bin_dataset(bin_path: str | os.PathLike, folds: int = 10, limit: int | None = None) -> Dataset:
    """An insightface .bin: images 2i and 2i+1 form pair i; identical JPEGs are embedded once."""
    bin_path = Path(bin_path)
    if not bin_path.is_file():
        raise FaceIDError(f"The verification file {bin_path} does not exist.")
    blobs, issame = load_verification_bin(bin_path)
    if issame.all() or not issame.any():
        raise FaceIDError(f"{bin_path} needs both same-person and different-person pairs.")
    keep = _take_limit(issame, limit)
    unique: dict[bytes, int] = {}
    index = np.array(
        [
            [unique.setdefault(blobs[2 * i], len(unique)), unique.setdefault(blobs[2 * i + 1], len(unique))]
            for i in keep
        ],
        dtype=np.int64,
    )
    labels = issame[keep]
    describe = {
        "bin": str(bin_path),
        "folds": int(folds),
        "fold_source": "stratified, in file order",
        "note": "images are pre-aligned 112x112 crops: detection skipped, embedded directly",
    }
    return Dataset(
        "verification-bin", bin_path.stem, list(unique), index, labels, stratified_folds(labels, folds), describe
    )


# ----------------------------------------------------------------------------- insightface .bin


def load_verification_bin(path: str | os.PathLike) -> tuple[list[bytes], np.ndarray]:
    """insightface's lfw.bin / cfp_fp.bin / agedb_30.bin -> (image bytes, 2 per pair; is_same per pair).

    Images i*2 and i*2+1 form pair i. Refuses any file that would need code to unpickle.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            obj = restricted_load(f, encoding="bytes")  # no globals at all: lists, bytes and bools
    except ForbiddenGlobal as err:
        raise FaceIDError(f"Cannot read verification file {path}: global {err} is not allowed.") from None
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as err:
        raise FaceIDError(f"Cannot read verification file {path}: {err}.") from None
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise FaceIDError(f"{path} is not an insightface verification file (expected (images, is_same)).")
    images, issame = obj
    # bytes(7) would silently become 7 zero bytes: insist on the types the format holds
    if not (
        isinstance(images, (list, tuple))
        and isinstance(issame, (list, tuple))
        and all(isinstance(b, (bytes, bytearray)) for b in images)
        and all(isinstance(v, (bool, int)) for v in issame)
    ):
        raise FaceIDError(
            f"{path} is not an insightface verification file (expected a list of image bytes and a list of booleans)."
        )
    images = [bytes(b) for b in images]
    issame = np.asarray([bool(v) for v in issame], dtype=bool)
    if len(images) != 2 * len(issame):
        raise FaceIDError(f"{path}: {len(images)} images for {len(issame)} pairs (expected two per pair).")
    return images, issame
