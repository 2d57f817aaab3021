"""The checkpoint schema (one place: every reader and writer goes through `Checkpoint`), atomic save, safe load.

On disk a checkpoint is one flat dict of plain Python types and tensors, so ``torch.load(weights_only=True)``
opens it and no code runs on load. `Checkpoint` is that dict with names and types:

- ``format`` ("faceid-checkpoint") and ``version`` (int), filled in on save and checked on load;
- ``kind``: why the file was written ("last", "best", "final", "interrupted", or "inference");
- what the app needs (`INFERENCE_KEYS`): ``network`` (the registered network the weights are for,
  `network.NETWORKS`; absent in older files, which all hold InceptionResnetV1), ``model`` (the backbone
  state_dict, without logits), ``preprocess`` (PreprocessSpec as a dict: how to crop and normalise) and ``calibration``: the
  score->FAR table of the app's comparison on held-out people (`faceid.model.calibration`,
  ``Calibration.to_dict()``; validated by ``Calibration.from_dict`` on load) or None; the app reads its
  thresholds from it. ``threshold`` (its threshold at ``--target-far``, float or None) and
  ``threshold_info`` (a summary) stay for readers of older checkpoints; ``validation``: the model's own
  validation record, the held-out pairs scored in training, against which every table's threshold is checked
  (`faceid.model.validation_record`), or None;
- what training needs to continue (`TrainingState`, absent from checkpoints not written by the trainer):
  head, optimizer, scheduler, scaler, counters, RNG states of every rank, config, metrics, history, best.

The *inference* checkpoint (``kind`` "inference", `inference_checkpoint`) keeps only what the app needs,
with the weights in float32 (so its fingerprint equals the full checkpoint's and registered templates stay
valid). It loads through the same `load_checkpoint` as the full one; it cannot resume training.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from ..core.errors import FaceIDError
from ..core.fileio import atomic_torch_save, require_regular_file
from ..core.validate import is_whole, shown
from .inference_fields import check_fields, field_error
from .network import DEFAULT_NETWORK

FORMAT = "faceid-checkpoint"
VERSION = 1
INFERENCE_KIND = "inference"
# What the app reads from a checkpoint: the inference checkpoint and the ONNX metadata carry exactly these.
INFERENCE_KEYS = ("network", "model", "preprocess", "threshold", "threshold_info", "calibration", "validation")


@dataclass(frozen=True)
class TrainingState:
    """Where a training run stands: enough to resume it exactly, or to start its next phase."""

    head: dict[str, torch.Tensor]  # the classification head's state_dict
    head_config: dict  # how to rebuild the head (`faceid.train.heads.head_config`)
    optimizer: dict
    scheduler: dict
    scaler: dict
    precision: str  # the resolved precision (bf16 / fp16 / fp32)
    epoch: int  # epochs completed
    step: int  # optimizer steps completed, all phases
    step_in_epoch: int  # steps into the current epoch (non-zero only when interrupted)
    phase: dict  # `faceid.train.bookkeeping.Phase` as a dict
    world_size: int  # processes that trained (an exact resume needs the same)
    rng: list  # one `faceid.train.rng.capture_rng_state()` per rank
    config: dict  # `faceid.train.config.TrainConfig.to_dict()`
    metrics: dict  # the last epoch's validation
    history: list  # one record per epoch
    best: dict  # which epoch is best_face_model.pth, by what
    label_map: list  # class index -> identity name
    progress: dict  # the current epoch's loss/images/seconds so far (kept across a resume)


TRAINING_KEYS = tuple(f.name for f in fields(TrainingState))


@dataclass(frozen=True)
class Checkpoint:
    """A faceid checkpoint: the inference part every checkpoint has, plus the training state when it has one."""

    model: dict[str, torch.Tensor]
    preprocess: dict
    network: str = DEFAULT_NETWORK  # which registered network the weights are for (`network.NETWORKS`)
    threshold: float | None = None
    threshold_info: dict | None = None
    calibration: dict | None = None
    validation: dict | None = None  # `validation_record`: the held-out pairs scored when it was written
    kind: str | None = None
    training: TrainingState | None = None

    def to_dict(self) -> dict[str, Any]:
        """The flat on-disk dict (format and version first; optional parts only when present)."""
        out: dict[str, Any] = {"format": FORMAT, "version": VERSION}
        for name in ("kind",) + INFERENCE_KEYS:
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.training is not None:
            out.update({name: getattr(self.training, name) for name in TRAINING_KEYS})
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "the checkpoint") -> Checkpoint:
        """Read the on-disk dict; a missing or bad field is one clear error (`check_inference_fields`)."""
        check_inference_fields(raw, source)
        present = [k for k in TRAINING_KEYS if k in raw]
        training = None
        if present:
            if len(present) < len(TRAINING_KEYS):
                absent = [k for k in TRAINING_KEYS if k not in raw]
                raise FaceIDError(f"{source} holds an incomplete training state (no {', '.join(absent)}).")
            training = TrainingState(**{k: raw[k] for k in TRAINING_KEYS})
        threshold = raw.get("threshold")
        return cls(
            model=raw["model"],
            preprocess=raw["preprocess"],
            network=raw.get("network", DEFAULT_NETWORK),  # checkpoints before the registry: the only network
            threshold=None if threshold is None else float(threshold),
            threshold_info=raw.get("threshold_info"),
            calibration=raw.get("calibration"),
            validation=raw.get("validation"),
            kind=raw.get("kind"),
            training=training,
        )


def save_checkpoint(path: str | os.PathLike, checkpoint: Checkpoint) -> None:
    """Write atomically (temp file + rename). A failed write (a full disk, most often, during a long run) is
    one sentence that says so; the file that was there before is left whole."""
    try:
        atomic_torch_save(path, checkpoint.to_dict())
    except OSError as err:
        free = shutil.disk_usage(Path(path).parent).free if Path(path).parent.is_dir() else None
        space = f" ({free / 1e9:.1f} GB free there)" if free is not None else ""
        raise FaceIDError(
            f"Cannot write the checkpoint {path}: {err.strerror or err}{space}; any earlier file "
            f"of that name is unchanged."
        ) from None


def is_checkpoint(obj: Any) -> bool:
    """Whether a loaded object is a faceid checkpoint dict (rather than, say, a plain state_dict)."""
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Open a checkpoint with weights_only=True; a missing, corrupt or foreign file is one clear error."""
    path = Path(path)
    require_regular_file(path, "The checkpoint")
    try:
        raw = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # zip errors, unpickling errors, EOF: all mean "not a usable checkpoint"
        raise FaceIDError(
            f"Cannot read checkpoint {path} ({type(err).__name__}); it is corrupt or not a faceid checkpoint."
        ) from None
    if not is_checkpoint(raw):
        raise FaceIDError(f"{path} is not a faceid checkpoint (a plain state_dict? load it as backbone weights).")
    version = raw.get("version", 0)
    if not is_whole(version):
        raise FaceIDError(f"Checkpoint {path}: field 'version' is {shown(version)}, not a whole number.")
    if version > VERSION:
        raise FaceIDError(f"{path} was written by a newer faceid (checkpoint version {version}).")
    return Checkpoint.from_dict(raw, str(path))


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a plain state_dict safely (weights_only) and cast it to float32."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad file; all mean the same to the user
        raise FaceIDError(f"Cannot read weights from {path}: {type(err).__name__}: {str(err)[:200]}") from None
    if is_checkpoint(obj):
        obj = Checkpoint.from_dict(obj, str(path)).model  # a faceid checkpoint passed as weights: its backbone
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise FaceIDError(f"{path} is not a state_dict of tensors.")
    return {k: v.float() if v.is_floating_point() else v for k, v in obj.items()}


def check_inference_fields(ckpt: dict[str, Any], where: str) -> None:
    """Validate every field the app relies on (`INFERENCE_KEYS`), naming the first bad one in one sentence: the
    weights here (named tensors; their shapes and values are checked where they are loaded into the network,
    `model.load_backbone_weights`), every other field by `inference_fields.check_fields`, which an ONNX file's
    metadata gets too."""
    check_fields(ckpt, where)
    model = ckpt.get("model")
    if (
        not isinstance(model, dict)
        or not model
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items())
    ):
        raise field_error(where, "model", type(model).__name__, "a non-empty state_dict of named tensors")


def inference_checkpoint(checkpoint: Checkpoint) -> Checkpoint:
    """The slim inference checkpoint of a full one: weights (float32), preprocessing spec, threshold and
    calibration; no head, optimizer, RNG or history (about a quarter of the size)."""
    model = {
        k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous()
        for k, v in checkpoint.model.items()
    }
    return replace(checkpoint, model=model, kind=INFERENCE_KIND, training=None)


def save_inference_checkpoint(path: str | os.PathLike, checkpoint: Checkpoint) -> None:
    """Write `inference_checkpoint(checkpoint)` atomically (what training and export_model.py call)."""
    save_checkpoint(path, inference_checkpoint(checkpoint))
