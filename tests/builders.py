"""Builders for small, real training inputs (JPEG faces, folder trees, .rec files) shared by tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch


def face_jpeg(identity: int, index: int, size: int = 112) -> bytes:
    """A face-like 112x112 JPEG: identity sets skin tone and geometry, index adds pose jitter and noise."""
    rng = np.random.default_rng(1000 * identity + index)
    id_rng = np.random.default_rng(identity)
    img = np.full((size, size, 3), id_rng.integers(30, 220, 3), dtype=np.uint8)
    skin = tuple(int(v) for v in id_rng.integers(90, 250, 3))
    cx, cy = size // 2 + int(rng.integers(-4, 5)), size // 2 + int(rng.integers(-4, 5))
    axes = (int(size * id_rng.uniform(0.28, 0.36)), int(size * id_rng.uniform(0.36, 0.44)))
    cv2.ellipse(img, (cx, cy), axes, 0, 0, 360, skin, -1)
    eye_dx, eye_y = int(size * id_rng.uniform(0.12, 0.18)), cy - int(size * 0.1)
    for dx in (-eye_dx, eye_dx):
        cv2.circle(img, (cx + dx, eye_y), max(2, size // 28), (20, 20, 20), -1)
    cv2.ellipse(
        img, (cx, cy + int(size * 0.18)), (int(size * id_rng.uniform(0.08, 0.14)), 4), 0, 0, 180, (120, 30, 40), -1
    )
    img = np.clip(img.astype(np.int16) + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def make_folder_tree(root: Path, counts: dict[str, int], size: int = 112) -> Path:
    """root/<name>/<nnn>.jpg with counts[name] images each."""
    for k, (name, n) in enumerate(sorted(counts.items())):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / name / f"{i:03d}.jpg").write_bytes(face_jpeg(k, i, size))
    return root


def make_rec(path: Path, counts: list[int], insightface: bool = True) -> Path:
    """A .rec (+ .idx) of synthetic faces: insightface layout (header, images, identity ranges) or plain."""
    from recordio_writer import write_recordio

    from faceid.data.recordio import Record

    images = [(label, face_jpeg(label, i)) for label, n in enumerate(counts) for i in range(n)]
    records = []
    if insightface:
        n, k = len(images), len(counts)
        records.append((0, Record(2, (float(n + 1), float(n + 1 + k)), 0, 0, b"")))
        records += [(i + 1, Record(0, float(lab), i + 1, 0, data)) for i, (lab, data) in enumerate(images)]
        first = 1
        for label, cnt in enumerate(counts):
            records.append((n + 1 + label, Record(2, (float(first), float(first + cnt)), 0, 0, b"")))
            first += cnt
    else:
        records = [(i, Record(0, float(lab), i, 0, data)) for i, (lab, data) in enumerate(images)]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_recordio(path, path.with_suffix(".idx"), records)
    return path


def make_random_checkpoint(path: Path, seed: int) -> Path:
    """A real checkpoint of a randomly initialised network (aligned crops, threshold 0.5): an honest model
    for tests that exercise everything but recognition quality."""
    from faceid.model.checkpoint import Checkpoint, save_checkpoint
    from faceid.model.network import build_backbone
    from faceid.model.preprocessing import ALIGNED_SPEC

    torch.manual_seed(seed)
    save_checkpoint(
        path, Checkpoint(model=build_backbone().state_dict(), preprocess=ALIGNED_SPEC.to_dict(), threshold=0.5)
    )
    return path
