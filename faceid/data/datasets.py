"""One index of face images for training and validation, over a folder tree or a .rec read directly.

A `FaceDataset` is a list of samples (where each image's bytes live + its class) plus the identity names.
It never decodes: `read_bytes(i)` returns the encoded file (JPEG for every insightface .rec), and decoding
is a separate step (`faceid.train.feed`: cv2 in DataLoader workers, or nvJPEG on the GPU for a whole batch).

Sources:
- folder tree ``<root>/<identity>/<image>.{jpg,png,...}`` (what preprocess_dataset.py / unpack writes, the
  Pins set, any folder-per-identity dataset);
- an MXNet ``.rec`` (+ ``.idx``) through `faceid.data.recordio`, so CASIA-WebFace's 490k faces need not be
  unpacked into 490k small files.

Filters (the same for both sources): identities with fewer than ``min_images`` images are dropped; an
identity with more than ``max_images`` keeps a deterministic choice of ``max_images`` (a random sample
seeded by the seed and the identity's name, kept in file order), so a rerun picks the same images.

Splits: `split_identities` holds out whole people for open-set verification; `split_images` is the seed's
80/20 split of images (torch.randperm with seed 42, as ``random_split`` does) for closed-set accuracy.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..core.decode import IMAGE_EXTENSIONS
from ..core.errors import FaceIDError
from ..core.report import command
from ..model.preprocessing import ALIGNED_SPEC, PreprocessSpec

if TYPE_CHECKING:  # annotations only: the reader is imported where a .rec is opened
    from .recordio import RecordIOReader

VERIFICATION_BINS = ("lfw.bin", "cfp_fp.bin", "agedb_30.bin")


@dataclass
class FaceDataset:
    """Samples (source item + class label) and identity names; no pixels are held.

    kind: "folder" (items = paths relative to `root`) or "rec" (items = record keys in `root`, a .rec).
    labels: (N,) int64 class indices into `identities`. spec: how these images become network input.
    """

    kind: str
    root: Path
    items: list
    labels: np.ndarray
    identities: list[str]
    spec: PreprocessSpec
    report: dict = field(default_factory=dict)
    _reader: RecordIOReader | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def num_identities(self) -> int:
        return len(self.identities)

    def describe(self, i: int) -> str:
        """Where sample i comes from, for error messages."""
        if self.kind == "folder":
            return str(self.root / self.items[i])
        return f"record {self.items[i]} of {self.root}"

    def read_bytes(self, i: int) -> bytes:
        """The encoded image of sample i. Missing/unreadable source -> FaceIDError naming it."""
        if self.kind == "folder":
            path = self.root / self.items[i]
            try:
                return path.read_bytes()
            except OSError as err:
                raise FaceIDError(f"Cannot read training image {path}: {err.strerror or err}.") from None
        if self._reader is None:
            from .recordio import RecordIOReader

            self._reader = RecordIOReader(self.root)
        return self._reader.read(int(self.items[i])).payload

    def select(self, indices, relabel: bool = True) -> "FaceDataset":
        """A new dataset over `indices`; with relabel, classes are renumbered 0..K-1 in their old order."""
        indices = np.asarray(indices, dtype=np.int64)
        labels = self.labels[indices]
        identities = self.identities
        if relabel:
            kept = np.unique(labels)
            remap = np.full(len(self.identities), -1, dtype=np.int64)
            remap[kept] = np.arange(len(kept))
            labels, identities = remap[labels], [self.identities[k] for k in kept]
        return FaceDataset(
            self.kind,
            self.root,
            [self.items[i] for i in indices],
            labels,
            identities,
            self.spec,
            dict(self.report),
            self._reader,
        )

    def label_map(self) -> dict:
        """JSON-ready: class index -> identity name, and back."""
        return {
            "num_classes": self.num_identities,
            "classes": list(self.identities),
            "name_to_index": {n: i for i, n in enumerate(self.identities)},
            "source": str(self.root),
            "preprocess": self.spec.to_dict(),
        }


# ----------------------------------------------------------------------------- opening a source


def open_dataset(
    path: str | os.PathLike,
    min_images: int = 5,
    max_images: int | None = 100,
    seed: int = 42,
    crop_style: str = "aligned5",
) -> FaceDataset:
    """A folder tree, a .rec file, or a directory holding train.rec -> filtered FaceDataset.

    `crop_style` applies to folder trees only ("aligned5" for trees unpacked from a .rec, "box" for loose
    detector crops such as Pins); a .rec is always insightface-aligned (ALIGNED_SPEC).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FaceIDError(
            f"Training data not found at {path}; run {command('preprocess_dataset.py')} first, or give a folder of "
            f"identity folders, a .rec file or a directory containing train.rec.",
            "data",
        )
    if min_images < 2 or (max_images is not None and max_images < min_images):
        raise FaceIDError(
            f"The images per identity must be at least 2 and the minimum must not exceed the "
            f"maximum, got {min_images} and {max_images}.",
            "min_images",
            "max_images",
        )
    if path.is_file():
        if path.suffix != ".rec":
            raise FaceIDError(
                f"{path} is a file but not a .rec; give a folder tree, a .rec or a directory with train.rec.", "data"
            )
        return _from_rec(path, min_images, max_images, seed)
    # the Kaggle archive may nest the .rec one folder down (e.g. casia-webface/faces_webface_112x112/)
    nested = sorted(path.glob("train.rec")) or sorted(path.glob("*/train.rec"))
    if nested:
        return _from_rec(nested[0], min_images, max_images, seed)
    return _from_folder(path, min_images, max_images, seed, PreprocessSpec(crop=crop_style))


def _choose(count: int, max_images: int | None, seed: int, name: str) -> np.ndarray:
    """Indices 0..count-1 to keep: all, or a seeded sample of max_images kept in order."""
    if max_images is None or count <= max_images:
        return np.arange(count)
    rng = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))])
    return np.sort(rng.choice(count, size=max_images, replace=False))


def _assemble(
    kind: str,
    root: Path,
    per_identity: list[tuple[str, list]],
    min_images: int,
    max_images: int | None,
    seed: int,
    spec: PreprocessSpec,
    reader: RecordIOReader | None = None,
) -> FaceDataset:
    items: list[str | int] = []
    labels: list[int] = []
    names: list[str] = []
    dropped, capped, total = 0, 0, 0
    for name, samples in per_identity:
        total += len(samples)
        if len(samples) < min_images:
            dropped += 1
            continue
        keep = _choose(len(samples), max_images, seed, name)
        capped += int(len(samples) > len(keep))
        items.extend(samples[k] for k in keep)
        labels.extend([len(names)] * len(keep))
        names.append(name)
    if len(names) < 2:
        raise FaceIDError(
            f"{root} has {len(names)} identities with at least {min_images} images; training "
            f"needs 2 or more: lower the minimum, or check the path.",
            "min_images",
            "data",
        )
    report = {
        "source_identities": len(per_identity),
        "source_images": total,
        "identities": len(names),
        "images": len(items),
        "dropped_identities": dropped,
        "capped_identities": capped,
        "min_images": min_images,
        "max_images": max_images,
    }
    return FaceDataset(kind, root, items, np.asarray(labels, dtype=np.int64), names, spec, report, reader)


def _from_folder(root: Path, min_images: int, max_images: int | None, seed: int, spec: PreprocessSpec) -> FaceDataset:
    per_identity = []
    try:
        with os.scandir(root) as it:
            dirs = sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))
        for name in dirs:
            with os.scandir(root / name) as it:
                files = sorted(e.name for e in it if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))
            if files:
                per_identity.append((name, [f"{name}/{f}" for f in files]))
    except OSError as err:
        raise FaceIDError(f"Cannot list the training folder {root}: {err.strerror or err}.") from None
    if not per_identity:
        raise FaceIDError(
            f"No images found in {root}: expected <root>/<identity>/<image>.jpg folders, a .rec "
            f"file, or a directory containing train.rec."
        )
    return _assemble("folder", root, per_identity, min_images, max_images, seed, spec)


def _from_rec(rec: Path, min_images: int, max_images: int | None, seed: int) -> FaceDataset:
    from .recordio import RecordIOReader, detect_layout

    reader = RecordIOReader(rec)
    if reader.truncated_tail is not None:
        raise FaceIDError(f"{rec} is truncated ({reader.index_note}); download or copy it again.")
    layout = detect_layout(reader)
    by_label: dict[int, list[int]] = {}
    if layout.kind == "insightface":
        for label, (first, end) in sorted(layout.identity_ranges.items()):
            by_label[label] = [k for k in range(first, end) if k in reader]
    else:
        for key in layout.image_keys:
            rec_ = reader.read(key)
            first_label = rec_.label[0] if isinstance(rec_.label, tuple) else rec_.label
            by_label.setdefault(int(first_label), []).append(key)
    per_identity = [(str(label), keys) for label, keys in sorted(by_label.items())]
    ds = _assemble("rec", rec, per_identity, min_images, max_images, seed, ALIGNED_SPEC, reader)
    ds.report["layout"] = layout.kind
    return ds


# ----------------------------------------------------------------------------- splits


def split_identities(
    dataset: FaceDataset, holdout_fraction: float = 0.1, seed: int = 42
) -> tuple[FaceDataset, FaceDataset | None]:
    """(training identities, held-out identities or None): whole people never trained on.

    Holds out round(fraction * K) identities, at least 2 (impostor pairs need two people) when the
    fraction is > 0, chosen by a permutation seeded with `seed`; both parts relabelled 0..k-1.
    """
    k = dataset.num_identities
    if holdout_fraction <= 0:
        return dataset, None
    if not holdout_fraction < 1:
        raise FaceIDError(f"The held-out fraction must be in [0, 1), got {holdout_fraction}.", "holdout_fraction")
    n_hold = max(2, int(round(holdout_fraction * k)))
    if k - n_hold < 2:
        raise FaceIDError(
            f"Only {k} identities: cannot hold out {n_hold} for verification and still train on 2; "
            f"use more data or hold out none (fraction 0).",
            "holdout_fraction",
        )
    perm = torch.randperm(k, generator=torch.Generator().manual_seed(seed)).numpy()
    held = np.zeros(k, dtype=bool)
    held[perm[:n_hold]] = True
    is_held = held[dataset.labels]
    return dataset.select(np.nonzero(~is_held)[0]), dataset.select(np.nonzero(is_held)[0])


def split_images(n: int, val_fraction: float = 0.2, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """The seed's image split: (train indices, val indices), sorted, exactly as
    ``torch.utils.data.random_split(range(n), [1 - val_fraction, val_fraction], generator=manual_seed(seed))``."""
    if not 0 <= val_fraction < 1:
        raise FaceIDError(f"The validation fraction must be in [0, 1), got {val_fraction}.", "val_fraction")
    if val_fraction == 0:
        return np.arange(n), np.zeros(0, dtype=np.int64)
    generator = torch.Generator().manual_seed(seed)
    # random_split uses only len() of its first argument; torch's stub asks for a Dataset, which range is not
    train, val = torch.utils.data.random_split(range(n), [1 - val_fraction, val_fraction], generator)  # type: ignore[arg-type, var-annotated]
    return np.sort(np.asarray(train.indices, dtype=np.int64)), np.sort(np.asarray(val.indices, dtype=np.int64))


def find_verification_bins(data_path: str | os.PathLike) -> list[Path]:
    """insightface verification files beside the data: every *.bin in the data's directory and its parent
    (for a .rec: its directory and that one's parent). For a folder tree unpacked by preprocess_dataset.py,
    also beside the .rec it came from (``unpack_report.json``'s ``rec_path``). Standard names first."""
    path = Path(data_path).expanduser()
    base = path.parent if path.is_file() else path
    dirs = [base, base.parent]
    source = _unpacked_from(base)
    if source is not None:
        dirs += [source.parent, source.parent.parent]
    found: dict[str, Path] = {}
    for directory in dirs:
        if directory.is_dir():
            for p in sorted(directory.glob("*.bin")):
                if p.is_file():
                    found.setdefault(p.resolve().as_posix(), p)
    order = {n: i for i, n in enumerate(VERIFICATION_BINS)}
    return sorted(found.values(), key=lambda p: (order.get(p.name, len(order)), str(p)))


def _unpacked_from(tree: Path) -> Path | None:
    """The .rec a folder tree was unpacked from, per its unpack_report.json (None if unknown)."""
    report = tree / "unpack_report.json"
    if not report.is_file():
        return None
    try:
        rec = json.loads(report.read_text(encoding="utf-8")).get("rec_path")
    except (OSError, ValueError, AttributeError):
        return None  # an unreadable report only means no extra place to look for .bin files
    return Path(rec) if isinstance(rec, str) and rec else None
