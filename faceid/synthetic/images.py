"""Generated images as files: one PNG per face, a grid of many, written atomically (`core.fileio`)."""

from __future__ import annotations

import math
import os

import cv2
import numpy as np
import torch

from ..core.errors import FaceIDError
from ..core.fileio import atomic_write_bytes
from ..model.preprocessing import from_network_input


def to_rgb_images(x: torch.Tensor) -> np.ndarray:
    """Generator output (N, 3, S, S) in [-1, 1] -> uint8 (N, S, S, 3) RGB."""
    return from_network_input(x.cpu()).permute(0, 2, 3, 1).contiguous().numpy()


def grid_of(images: np.ndarray, columns: int | None = None, pad: int = 2) -> np.ndarray:
    """(N, S, S, 3) uint8 -> one (H, W, 3) mosaic, row by row, `pad` white pixels between tiles."""
    n, side = len(images), images.shape[1]
    cols = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    out = np.full((rows * (side + pad) + pad, cols * (side + pad) + pad, 3), 255, np.uint8)
    for k, img in enumerate(images):
        r, c = divmod(k, cols)
        y, x = pad + r * (side + pad), pad + c * (side + pad)
        out[y : y + side, x : x + side] = img
    return out


def png_bytes(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise FaceIDError("Could not encode an image as PNG.")
    return buf.tobytes()


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    atomic_write_bytes(path, png_bytes(rgb))
