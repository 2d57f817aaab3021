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

The *inference* checkpoint (``kind`` "inference", `inference_checkpoint`) keeps only what the app needs:
``model`` (float32, so its fingerprint equals the full checkpoint's and registered templates stay
valid), ``preprocess``, ``threshold`` and the calibration keys in `INFERENCE_KEYS`. It loads through
the same `load_checkpoint` as the full one; it cannot resume training.
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
INFERENCE_KIND = "inference"
# What the app reads from a checkpoint: the inference checkpoint and the ONNX metadata carry exactly these.
INFERENCE_KEYS = ("model", "preprocess", "threshold", "threshold_info", "calibration")


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


def inference_checkpoint(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The slim inference checkpoint of a full one: weights (float32), preprocessing spec, threshold and
    calibration; no head, optimizer, RNG or history (about a quarter of the size)."""
    missing = [k for k in ("model", "preprocess") if checkpoint.get(k) is None]
    if missing:
        raise ValueError(f"checkpoint lacks {missing}")
    slim: dict[str, Any] = {k: checkpoint[k] for k in INFERENCE_KEYS if checkpoint.get(k) is not None}
    slim["model"] = {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous()
                     for k, v in checkpoint["model"].items()}
    slim["kind"] = INFERENCE_KIND
    return slim


def save_inference_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> None:
    """Write `inference_checkpoint(checkpoint)` atomically (what training and export_model.py call)."""
    save_checkpoint(path, inference_checkpoint(checkpoint))


# ----------------------------------------------------------------------------- RNG state (training resume)

def capture_rng_state() -> dict[str, Any]:
    """This process's torch / CUDA / numpy / python RNG states as tensors and plain types (weights_only-safe)."""
    import random

    import numpy as np

    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        "numpy": {"name": str(name), "keys": [int(k) for k in keys], "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "internal": [int(v) for v in internal], "gauss": gauss},
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of capture_rng_state (CUDA states only restored when the device count matches)."""
    import random

    import numpy as np

    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    npst = state["numpy"]
    np.random.set_state((npst["name"], np.asarray(npst["keys"], dtype=np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached_gaussian"]))
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
