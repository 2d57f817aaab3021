"""The checkpoint schema, atomic save and safe load.

A checkpoint is a dict of plain Python types and tensors only, so ``torch.load(weights_only=True)``
opens it and no code runs on load. Keys:

- ``format`` ("faceid-checkpoint"), ``version`` (int)
- ``model``: the backbone state_dict (InceptionResnetV1 without logits)
- ``preprocess``: PreprocessSpec as a dict (how the app must crop and normalise)
- ``calibration``: the score->FAR table of the app's comparison on held-out people (`faceid.calibration`,
  ``Calibration.to_dict()``; validated by ``Calibration.from_dict`` on load) or None; the app reads its
  thresholds from it. ``threshold`` (its threshold at ``--target-far``, float or None) and
  ``threshold_info`` (a summary) stay for readers of older checkpoints.
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
    version = ckpt.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise FaceIDError(f"Checkpoint {path}: field 'version' is {version!r}, not a whole number.")
    if version > VERSION:
        raise FaceIDError(f"{path} was written by a newer faceid (checkpoint version {ckpt['version']}).")
    check_inference_fields(ckpt, str(path))
    return ckpt


MIN_INPUT_SIZE, MAX_INPUT_SIZE = 32, 1024   # network input side: InceptionResnetV1 needs >= ~32 px to pool


def check_inference_fields(ckpt: dict[str, Any], where: str) -> None:
    """Validate every field the app relies on (`INFERENCE_KEYS`), naming the first bad one in one sentence.

    A checkpoint that loads safely can still lie: ``threshold: -5`` would make every face MATCH (reported as
    calibrated), ``size: 0`` would crash deep inside the network. Weights are checked where they are loaded
    into the network (`model.load_backbone_weights`: shapes, finite values)."""
    from .preprocessing import CROP_STYLES

    def bad(field: str, value: Any, expected: str) -> FaceIDError:
        shown = repr(value) if len(repr(value)) <= 60 else f"{type(value).__name__} {repr(value)[:40]}..."
        return FaceIDError(f"Checkpoint {where}: field {field!r} is {shown}; expected {expected}.")

    model = ckpt.get("model")
    if not isinstance(model, dict) or not model or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()):
        raise bad("model", type(model).__name__, "a non-empty state_dict of named tensors")
    pre = ckpt.get("preprocess")
    if not isinstance(pre, dict):
        raise bad("preprocess", pre, "a dict (crop, size, margin, normalize, flip)")
    if pre.get("crop") not in CROP_STYLES:
        raise bad("preprocess.crop", pre.get("crop"), f"one of {', '.join(CROP_STYLES)}")
    size = pre.get("size", 160)
    if not _is_int(size) or not MIN_INPUT_SIZE <= size <= MAX_INPUT_SIZE:
        raise bad("preprocess.size", size, f"a whole number of pixels from {MIN_INPUT_SIZE} to {MAX_INPUT_SIZE}")
    margin = pre.get("margin", 0)
    if not _is_int(margin) or not 0 <= margin < size // 2:
        raise bad("preprocess.margin", margin, f"a whole number of pixels from 0 to {size // 2 - 1}")
    if not isinstance(pre.get("flip", True), bool):
        raise bad("preprocess.flip", pre.get("flip"), "true or false")
    threshold = ckpt.get("threshold")
    if threshold is not None and not (_is_real(threshold) and -1.0 <= float(threshold) <= 1.0):
        raise bad("threshold", threshold, "a cosine similarity between -1 and 1 (or none)")
    info = ckpt.get("threshold_info")
    if info is not None and not isinstance(info, dict):
        raise bad("threshold_info", info, "a dict (or none)")
    for key in ("target_far", "threshold", "tar"):
        value = (info or {}).get(key)
        if value is not None and not (_is_real(value) and -1.0 <= float(value) <= 1.0):
            raise bad(f"threshold_info.{key}", value, "a number between -1 and 1")
    if ckpt.get("calibration") is not None:
        from .calibration import Calibration

        Calibration.from_dict(ckpt["calibration"], where=f"checkpoint {where}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    import math

    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


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
