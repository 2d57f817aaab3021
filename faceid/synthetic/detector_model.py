"""The real-vs-synthetic detector as the app uses it: its checkpoint schema, its network, and one score per face.

The network is InceptionResnetV1 (the recogniser's backbone, `faceid.model.network`) whose classifier is one
logit: high = generated. ``score`` is its sigmoid, a number in [0, 1]; a face is *flagged* when its score is
at least the checkpoint's threshold, chosen by train_detector.py at a false-reject rate on held-out real
people (the share of real faces it would refuse).

This module imports only `core` and `model` (no training code), so the app can load a detector without the
trainer. Its file is one flat dict of plain types and tensors (``torch.load(weights_only=True)``: no code runs
on load), every field checked when read:

``format`` ("faceid-synthetic-detector"), ``version``, ``kind`` ("best", "last", "final"), ``network``,
``model`` (the whole network's state_dict, classifier included), ``preprocess`` (`PreprocessSpec`: the crop
it scores), ``threshold`` (score in [0, 1]), ``threshold_info`` (the false-reject rate asked, and measured
on validation), ``metrics`` (the validation's accuracy, AUC, EER, ...), ``trained_on`` (what real and which
synthetic sources it learnt from: its limits) and, when written by training, ``training`` (what a resume needs).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.errors import FaceIDError
from ..core.fileio import atomic_torch_save
from ..model.embeddings import EMBEDDING_DIM
from ..model.network import DEFAULT_NETWORK, NETWORKS, build_backbone
from ..model.preprocessing import PreprocessSpec, crop_face, crops_to_tensor, to_network_input

DETECTOR_FORMAT, DETECTOR_VERSION = "faceid-synthetic-detector", 1
DETECTOR_KINDS = ("best", "last", "final")
MIN_SIDE = 75  # the smallest input InceptionResnetV1's last pooling takes


def detector_network(network: str = DEFAULT_NETWORK, backbone: nn.Module | None = None) -> nn.Module:
    """The backbone (`backbone`, e.g. with initial weights loaded, or a new one) with a one-logit classifier:
    facenet-pytorch's ``classify`` path, its ``logits`` layer replaced by Linear(512, 1) on the raw ``last_bn``
    feature. forward: (N, 3, S, S) -> (N, 1) logits."""
    net = build_backbone(network) if backbone is None else backbone
    net.classify = True  # type: ignore[assignment]  # nn.Module's stub types unknown attributes as Tensor | Module
    net.logits = nn.Linear(EMBEDDING_DIM, 1)
    return net


@dataclass(frozen=True)
class DetectorCheckpoint:
    model: dict[str, torch.Tensor]
    preprocess: dict
    threshold: float
    threshold_info: dict
    metrics: dict
    trained_on: dict
    kind: str = "best"
    network: str = DEFAULT_NETWORK
    training: dict | None = field(default=None)  # optimizer, counters, RNG, history, config (train_detector.py)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": DETECTOR_FORMAT, "version": DETECTOR_VERSION}
        for name in ("kind", "network", "model", "preprocess", "threshold", "threshold_info", "metrics", "trained_on"):
            out[name] = getattr(self, name)
        if self.training is not None:
            out["training"] = self.training
        return out


def save_detector_checkpoint(path: str | os.PathLike, ckpt: DetectorCheckpoint) -> None:
    try:
        atomic_torch_save(path, ckpt.to_dict())
    except OSError as err:
        raise FaceIDError(f"Cannot write the detector checkpoint {path}: {err.strerror or err}.") from None


def read_detector_checkpoint(path: str | os.PathLike) -> DetectorCheckpoint:
    """Open and check a detector file; anything missing, foreign or out of range is one sentence."""
    path = Path(path).expanduser()
    where = f"synthetic-face detector {path}"
    if not path.is_file():
        raise FaceIDError(f"Synthetic-face detector not found: {path}.", "synthetic_detector")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # zip, unpickling, EOF errors: all mean "not a usable detector"
        raise FaceIDError(
            f"Cannot read {where} ({type(err).__name__}); it is corrupt or not a detector written by train_detector.py.",
            "synthetic_detector",
        ) from None
    if not isinstance(raw, dict) or raw.get("format") != DETECTOR_FORMAT:
        raise FaceIDError(f"{path} is not a detector written by train_detector.py.", "synthetic_detector")
    if raw.get("version") != DETECTOR_VERSION:
        raise FaceIDError(f"{where} has version {raw.get('version')!r}; this program reads {DETECTOR_VERSION}.")

    def bad(name: str, expected: str) -> FaceIDError:
        shown = repr(raw.get(name))
        return FaceIDError(f"{where}: field {name!r} is {shown[:60]}; expected {expected}.", "synthetic_detector")

    if raw.get("kind") not in DETECTOR_KINDS:
        raise bad("kind", f"one of {', '.join(DETECTOR_KINDS)}")
    if raw.get("network") not in NETWORKS:
        raise bad("network", f"one of {', '.join(sorted(NETWORKS))}")
    model = raw.get("model")
    if not isinstance(model, dict) or not model or not all(isinstance(v, torch.Tensor) for v in model.values()):
        raise bad("model", "a state_dict of tensors")
    if not isinstance(raw.get("preprocess"), dict):
        raise bad("preprocess", "a dict (crop, size, ...)")
    try:
        spec = PreprocessSpec.from_dict(raw["preprocess"])
    except (FaceIDError, TypeError):
        raise bad("preprocess", "a crop spec (crop aligned5 or box, size, margin)") from None
    if not isinstance(spec.size, int) or isinstance(spec.size, bool) or not MIN_SIDE <= spec.size <= 1024:
        raise bad("preprocess", f"a crop size from {MIN_SIDE} to 1024 pixels")
    threshold = raw.get("threshold")
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0.0 <= threshold <= 1.0:
        raise bad("threshold", "a score between 0 and 1")
    for name in ("threshold_info", "metrics", "trained_on"):
        if not isinstance(raw.get(name), dict):
            raise bad(name, "a dict")
    if raw.get("training") is not None and not isinstance(raw["training"], dict):
        raise bad("training", "a dict or none")
    return DetectorCheckpoint(
        model=model,
        preprocess=raw["preprocess"],
        threshold=float(threshold),
        threshold_info=raw["threshold_info"],
        metrics=raw["metrics"],
        trained_on=raw["trained_on"],
        kind=raw["kind"],
        network=raw["network"],
        training=raw.get("training"),
    )


class SyntheticFaceDetector:
    """A loaded detector: `score_face` crops a detected face the way the detector was trained and scores it.

    Complete after construction (`load_synthetic_detector`); eval mode on its device."""

    def __init__(self, ckpt: DetectorCheckpoint, source: str, device: torch.device):
        self.spec = PreprocessSpec.from_dict(ckpt.preprocess)
        self.threshold = ckpt.threshold
        self.threshold_info = ckpt.threshold_info
        self.trained_on = ckpt.trained_on
        self.source = source
        self.device = device
        net = detector_network(ckpt.network)
        try:
            net.load_state_dict(ckpt.model)
        except RuntimeError:
            raise FaceIDError(
                f"{source}: its weights do not fit the {ckpt.network} detector network.", "synthetic_detector"
            ) from None
        bad = [k for k, v in ckpt.model.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise FaceIDError(f"{source}: non-finite weights ({bad[0]}).", "synthetic_detector")
        self.net = net.eval().to(device)

    @torch.no_grad()
    def score_crops(self, crops: list[np.ndarray]) -> np.ndarray:
        """uint8 crops of side spec.crop_size -> scores in [0, 1] (high = generated)."""
        if not crops:
            return np.zeros(0, np.float32)
        x = to_network_input(crops_to_tensor(crops), self.spec).to(self.device)
        return torch.sigmoid(self.net(x).float().reshape(-1)).cpu().numpy()

    def crop(self, frame_rgb: np.ndarray, box: np.ndarray, landmarks: np.ndarray | None) -> np.ndarray:
        return crop_face(frame_rgb, box, landmarks, self.spec)

    def score_face(self, frame_rgb: np.ndarray, box: np.ndarray, landmarks: np.ndarray | None) -> float:
        return float(self.score_crops([self.crop(frame_rgb, box, landmarks)])[0])

    def flags(self, score: float) -> bool:
        return math.isfinite(score) and score >= self.threshold


def load_synthetic_detector(path: str | os.PathLike, device: torch.device | str = "cpu") -> SyntheticFaceDetector:
    return SyntheticFaceDetector(read_detector_checkpoint(path), str(path), torch.device(device))
