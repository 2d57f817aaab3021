"""The checkpoint schema, atomic save and safe load.

A checkpoint is a dict of plain Python types and tensors only, so ``torch.load(weights_only=True)``
opens it and no code runs on load. Keys:

- ``format`` ("faceid-checkpoint"), ``version`` (int)
- ``model``: the backbone state_dict (InceptionResnetV1 without logits)
- ``preprocess``: PreprocessSpec as a dict (how the app must crop and normalise)
- ``threshold``: cosine threshold calibrated on held-out pairs at ``threshold_far`` (float or None)
- ``head``, ``head_config``, ``optimizer``, ``scheduler``, ``scaler``: training state (may be None)
- ``epoch``, ``step``, ``rng``, ``config``, ``metrics``, ``history``: where training stands
- ``label_map``: class index -> identity name (list of str)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .errors import FaceIDError
from .fileio import atomic_torch_save

FORMAT = "faceid-checkpoint"
VERSION = 1
REQUIRED_KEYS = ("format", "version", "model", "preprocess")


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> None:
    """Write atomically; fills in format/version."""
    checkpoint = {"format": FORMAT, "version": VERSION, **checkpoint}
    missing = [k for k in REQUIRED_KEYS if checkpoint.get(k) is None]
    if missing:
        raise ValueError(f"checkpoint lacks {missing}")
    atomic_torch_save(path, checkpoint)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Open a checkpoint with weights_only=True; a missing, corrupt or foreign file is one clear error."""
    path = Path(path)
    if not path.is_file():
        raise FaceIDError(f"Checkpoint not found: {path}.")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # zip errors, unpickling errors, EOF: all mean "not a usable checkpoint"
        raise FaceIDError(f"Cannot read checkpoint {path} ({type(err).__name__}); it is corrupt or not a "
                          f"faceid checkpoint.") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise FaceIDError(f"{path} is not a faceid checkpoint (a plain state_dict? pass it with --weights).")
    if ckpt.get("version", 0) > VERSION:
        raise FaceIDError(f"{path} was written by a newer faceid (checkpoint version {ckpt['version']}).")
    return ckpt
