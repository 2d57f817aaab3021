"""The detector's data: real faces (label 0) from the recogniser's data and synthetic ones (label 1) from folders,
one index the trainer's feed reads (`faceid.train.feed.FaceSamples`), split so validation shares no source.

Real faces come through `faceid.data.datasets.open_dataset` (a JPG tree, a .rec, folder-per-identity), and
their *identities* are split: a person is in training or in validation, never both, so the validation
measures faces of people the detector never saw. Synthetic folders are split the same way by their groups:
each image of generate_faces.py's output (its own noise seed: no two are the same face) or of a flat folder is
its own group, and each subfolder of a folder of subfolders is one group (one source, one fake identity).

A manifest.json written by generate_faces.py lists the files to use (plain names inside the folder only); its
checkpoint and epoch are recorded in what the detector says it was trained on.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.decode import IMAGE_EXTENSIONS
from ..core.errors import FaceIDError
from ..data.datasets import FaceDataset, open_dataset
from ..model.preprocessing import PreprocessSpec
from .detector_config import DetectorConfig
from .generate import MANIFEST, MANIFEST_FORMAT

REAL, SYNTHETIC = 0, 1


@dataclass
class SyntheticSource:
    """The images of one synthetic folder and the group of each."""

    root: Path
    files: list[Path]
    groups: list[int]
    described: dict


def scan_synthetic(folder: str | os.PathLike, limit: int | None = None) -> SyntheticSource:
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FaceIDError(f"Synthetic-face folder not found: {root}.", "synthetic")
    manifest = root / MANIFEST
    described: dict = {"folder": str(root)}
    try:
        files, groups = _from_manifest(root, manifest, described) if manifest.is_file() else _from_folder(root)
    except OSError as err:
        raise FaceIDError(
            f"Cannot read the synthetic-face folder {root}: {err.strerror or err}.", "synthetic"
        ) from None
    described.setdefault("kind", "folder")
    if limit is not None and len(files) > limit:
        keep = np.sort(np.random.default_rng(0).choice(len(files), limit, replace=False))
        files, groups = [files[i] for i in keep], [groups[i] for i in keep]
    if len(set(groups)) < 2:
        raise FaceIDError(
            f"{root} holds {len(files)} synthetic images in {len(set(groups))} group(s); the detector needs at "
            f"least 2 (one to train on, one to validate with).",
            "synthetic",
        )
    described["images"] = len(files)
    return SyntheticSource(root, files, groups, described)


def _from_folder(root: Path) -> tuple[list[Path], list[int]]:
    """Images directly in `root` (one group each) and in its subfolders (one group per subfolder)."""
    files: list[Path] = []
    groups: list[int] = []
    with os.scandir(root) as it:
        entries = sorted(it, key=lambda e: e.name)
    subdirs = [e for e in entries if e.is_dir() and not e.name.startswith(".")]
    for e in entries:
        if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS):
            files.append(Path(e.path))
            groups.append(len(groups))
    for g, sub in enumerate(subdirs, start=len(groups)):
        for name in sorted(os.listdir(sub.path)):
            if name.lower().endswith(IMAGE_EXTENSIONS) and (Path(sub.path) / name).is_file():
                files.append(Path(sub.path) / name)
                groups.append(g)
    return files, groups


def _from_manifest(root: Path, manifest: Path, described: dict) -> tuple[list[Path], list[int]]:
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        if not (
            isinstance(data, dict) and data.get("format") == MANIFEST_FORMAT and isinstance(data.get("faces"), list)
        ):
            raise ValueError("not a manifest")
        names = [f["file"] for f in data["faces"]]
        if not all(isinstance(n, str) and n == Path(n).name and not n.startswith(".") for n in names):
            raise ValueError("a file name outside the folder")
    except (OSError, ValueError, KeyError, TypeError):
        raise FaceIDError(f"{manifest} is not a manifest written by generate_faces.py.", "synthetic") from None
    files = [root / n for n in names]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise FaceIDError(f"{manifest} lists {missing[0].name}, which is not in {root}.", "synthetic")
    described.update(
        kind="generate_faces.py",
        checkpoint=str(data.get("checkpoint", "")),
        checkpoint_sha256=str(data.get("checkpoint_sha256", "")),
        epoch=data.get("epoch"),
        generator_side=data.get("generator_side"),
    )
    return files, list(range(len(files)))


class DetectorData:
    """Real and synthetic faces as one index: what `FaceSamples` and the feed read (read_bytes, labels, spec,
    describe), with `groups` (identity or synthetic group of each image) for the split."""

    def __init__(self, real: FaceDataset, sources: list[SyntheticSource], spec: PreprocessSpec):
        self.real, self.sources, self.spec = real, sources, spec
        self.files = [f for s in sources for f in s.files]
        n_real = len(real)
        self.labels = np.r_[np.full(n_real, REAL), np.full(len(self.files), SYNTHETIC)].astype(np.int64)
        offset, groups = real.num_identities, [real.labels]
        for s in sources:
            groups.append(np.asarray(s.groups, np.int64) + offset)
            offset += max(s.groups) + 1
        self.groups = np.concatenate(groups)
        self.root = real.root

    def __len__(self) -> int:
        return len(self.labels)

    def read_bytes(self, i: int) -> bytes:
        if i < len(self.real):
            return self.real.read_bytes(i)
        path = self.files[i - len(self.real)]
        try:
            return path.read_bytes()
        except OSError as err:
            raise FaceIDError(f"Cannot read synthetic image {path}: {err.strerror or err}.") from None

    def describe(self, i: int) -> str:
        return self.real.describe(i) if i < len(self.real) else str(self.files[i - len(self.real)])

    def trained_on(self) -> dict:
        return {
            "real": {"source": str(self.real.root), "identities": self.real.num_identities, "images": len(self.real)},
            "synthetic": [s.described for s in self.sources],
        }


def open_detector_data(cfg: DetectorConfig) -> DetectorData:
    if not cfg.synthetic:
        raise FaceIDError("No synthetic faces given; name a folder of them (generate_faces.py's output).", "synthetic")
    real = open_dataset(cfg.real, cfg.min_images, cfg.max_images, cfg.seed, cfg.crop_style)
    sources = [scan_synthetic(folder, cfg.max_synthetic) for folder in cfg.synthetic]
    spec = PreprocessSpec(crop=real.spec.crop, size=cfg.input_size, margin=real.spec.margin, flip=False)
    return DetectorData(real, sources, spec)


def split_by_group(data: DetectorData, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices): each class's groups split by a seeded permutation, at least one
    group of each class on each side."""
    train, val = [], []
    for label in (REAL, SYNTHETIC):
        idx = np.nonzero(data.labels == label)[0]
        groups = np.unique(data.groups[idx])
        perm = torch.randperm(len(groups), generator=torch.Generator().manual_seed(seed + label)).numpy()
        n_val = min(max(1, int(round(val_fraction * len(groups)))), len(groups) - 1)
        held = np.isin(data.groups[idx], groups[perm[:n_val]])
        train.append(idx[~held])
        val.append(idx[held])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))
