"""generate_faces.py: seeded, reproducible faces from a GAN checkpoint, with a grid and a manifest.

Face k comes from noise seeded with ``seed + k`` alone (`gan.seeded_noise`) and the generator in eval mode, so
the same checkpoint and seed write the same PNG bytes on any batch size. The manifest (manifest.json) lists
each file with its seed and sha256 and names the checkpoint (path, sha256, epoch): train_detector.py reads
the folder as synthetic faces, and anyone can tell where each image came from.

The output folder must be new, empty, or an earlier output of this program (its manifest says so): the program
overwrites nothing it did not write.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
import torch

from ..core import report
from ..core.device import resolve_device
from ..core.errors import FaceIDError
from ..core.fileio import atomic_write_bytes, atomic_write_json, sha256_file
from .gan import Generator, seeded_noise
from .gan_checkpoint import load_gan_checkpoint
from .images import grid_of, png_bytes, to_rgb_images, write_png

MANIFEST, GRID = "manifest.json", "grid.png"
MANIFEST_FORMAT = "faceid-generated-faces"
GRID_MAX = 64
BATCH = 64


def face_name(seed: int) -> str:
    return f"face_{seed:06d}.png"


def check_output_folder(out: Path) -> None:
    """New, empty, or written by this program before; anything else is left alone and refused."""
    if not out.exists():
        return
    if not out.is_dir():
        raise FaceIDError(f"{out} exists and is not a folder; name a new folder for the generated faces.", "out")
    if not any(out.iterdir()):
        return
    try:
        ours = json.loads((out / MANIFEST).read_text(encoding="utf-8")).get("format") == MANIFEST_FORMAT
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise FaceIDError(
            f"{out} already holds files that generate_faces.py did not write; name a new or empty folder.", "out"
        )


def generate_faces(
    checkpoint: str | os.PathLike, count: int, out: str | os.PathLike, seed: int = 0, upscale: int = 1, device=None
) -> dict:
    """Write `count` faces, grid.png and manifest.json into `out`; returns the manifest."""
    out = Path(out).expanduser()
    check_output_folder(out)
    ckpt = load_gan_checkpoint(checkpoint)
    cfg = ckpt.config
    dev = resolve_device(device)
    generator = Generator(cfg.side, cfg.nz, cfg.width)
    try:
        generator.load_state_dict(ckpt.generator)
    except RuntimeError:
        raise FaceIDError(f"{checkpoint}: the generator's weights do not fit its settings (side, nz, width).") from None
    generator.eval().to(dev)
    seeds = list(range(seed, seed + count))
    faces: list[dict] = []
    grid: list[np.ndarray] = []
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        for start in report.progress(range(0, count, BATCH), desc="generating", unit="batch"):
            chunk = seeds[start : start + BATCH]
            images = to_rgb_images(generator(seeded_noise(chunk, cfg.nz).to(dev)).float())
            for s, img in zip(chunk, images):
                if upscale > 1:
                    img = cv2.resize(img, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC)
                data = png_bytes(img)
                atomic_write_bytes(out / face_name(s), data)
                faces.append({"file": face_name(s), "seed": s, "sha256": hashlib.sha256(data).hexdigest()})
                if len(grid) < GRID_MAX:
                    grid.append(img)
    write_png(out / GRID, grid_of(np.stack(grid)))
    manifest = {
        "format": MANIFEST_FORMAT,
        "checkpoint": str(Path(checkpoint)),
        "checkpoint_sha256": sha256_file(checkpoint),
        "epoch": ckpt.epoch,
        "side": cfg.side * upscale,
        "generator_side": cfg.side,
        "upscale": upscale,
        "count": count,
        "faces": faces,
    }
    atomic_write_json(out / MANIFEST, manifest)
    report.note(f"{count} faces, {GRID} and {MANIFEST} in {out}")
    return manifest
