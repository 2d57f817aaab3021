"""Detect -> choose face -> crop per the checkpoint's spec -> embed. One pipeline for app and evaluator.

Frames are RGB uint8 numpy arrays (H, W, 3). Detection is MTCNN: facenet-pytorch's on torch (its weights ship
in the wheel), or the same networks exported beside an ONNX embedder on onnxruntime (`mtcnn_onnx`), so an
exported model runs without importing torch. Embeddings are (N, 512) float32 numpy arrays, L2-normalised, so a
dot product is the cosine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from .embeddings import EMBEDDING_DIM
from .preprocessing import crop_face, crops_to_tensor, to_network_array, to_network_input

if TYPE_CHECKING:
    import torch

    from .embedder import Embedder


@dataclass
class Detection:
    """One face: box (x1, y1, x2, y2) in frame pixels, MTCNN probability 0..1, landmarks (5, 2) pixels."""

    box: np.ndarray
    prob: float
    landmarks: np.ndarray

    @property
    def size(self) -> float:
        """Shorter side of the box in pixels."""
        return float(min(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    @property
    def area(self) -> float:
        return float(max(self.box[2] - self.box[0], 0) * max(self.box[3] - self.box[1], 0))


@dataclass
class FaceResult:
    """What one frame gave: every detection (largest first), and the chosen face's crop and embedding."""

    detections: list[Detection]
    crop: np.ndarray | None = None  # uint8 (spec.crop_size, spec.crop_size, 3)
    embedding: np.ndarray | None = None  # float32 (512,), L2-normalised
    notes: list[str] = field(default_factory=list)
    # why no face came, when none did: "no face found", or "no face (image is 4000x16)" for a frame too small or
    # too thin for the detector to look at
    miss: str | None = None

    @property
    def face(self) -> Detection | None:
        return self.detections[0] if self.detections else None


# Detection on frames downscaled to 320 px with faces >= 40 px there (measured with bench/bench_latency.py): a
# face must fill >= 1/8 of the frame's long side (80 px in a 640x480 webcam frame, the quality gate's minimum),
# and MTCNN's pyramid stays short.
DETECT_MAX_SIDE, DETECT_MIN_FACE = 320, 40


class FaceDetector:
    """MTCNN wrapper. `max_side` downsizes big frames before detection (boxes are mapped back): a face
    filling a webcam frame is found as well at 320 px, several times faster on a CPU. With `onnx_stages` (an
    exported embedder whose detector files lie beside it) MTCNN runs on onnxruntime on `threads` threads."""

    def __init__(
        self,
        device: torch.device | str = "cpu",
        min_face_size: int = DETECT_MIN_FACE,
        max_side: int | None = DETECT_MAX_SIDE,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        onnx_stages: str | os.PathLike | None = None,
        threads: int = 1,
    ):
        self.max_side = max_side
        self.min_face_size = min_face_size
        self.runtime = "torch" if onnx_stages is None else "onnx"
        if onnx_stages is not None:
            from .mtcnn_onnx import OnnxMTCNN

            self.mtcnn: Any = OnnxMTCNN(onnx_stages, min_face_size, thresholds, threads)  # MTCNN.detect's answer
            return
        import torch
        from facenet_pytorch import MTCNN

        self.mtcnn = MTCNN(
            min_face_size=min_face_size,
            thresholds=list(thresholds),
            keep_all=True,
            post_process=False,
            device=torch.device(device),
        )

    def detect(self, frame_rgb: np.ndarray) -> list[Detection]:
        """All faces in the frame, largest first."""
        return self.detect_batch([frame_rgb])[0]

    def too_small(self, frame_rgb: np.ndarray) -> bool:
        """Whether a frame is too small or too thin to hold a face the detector can find: after the downscale to
        `max_side`, its shorter side is under the smallest face MTCNN looks for (a 1x1 photo, a 4000x16 video).
        MTCNN itself fails on such a frame (its image pyramid is empty), so it is never handed one."""
        h, w = frame_rgb.shape[:2]
        scale = min(1.0, self.max_side / max(h, w)) if self.max_side and h and w else 1.0
        return min(h, w) * scale < self.min_face_size

    def detect_batch(self, frames_rgb: list[np.ndarray]) -> list[list[Detection]]:
        """Detect in several frames; frames of equal size go through MTCNN as one batch. A frame that is
        `too_small` has no faces."""
        results: list[list[Detection]] = [[] for _ in frames_rgb]
        by_shape: dict[tuple, list[int]] = {}
        scaled: dict[int, np.ndarray] = {}
        scales: dict[int, float] = {}
        for i, frame in enumerate(frames_rgb):
            if self.too_small(frame):
                continue
            small, scale = self._shrink(frame)
            scaled[i], scales[i] = small, scale
            by_shape.setdefault(small.shape, []).append(i)
        for idx in by_shape.values():
            batch = np.stack([scaled[i] for i in idx])
            boxes, probs, points = self.mtcnn.detect(batch, landmarks=True)
            for j, i in enumerate(idx):
                if boxes[j] is None:
                    continue
                dets = [
                    Detection(
                        box=np.asarray(b, np.float32) / scales[i],
                        prob=float(p),
                        landmarks=np.asarray(lm, np.float32) / scales[i],
                    )
                    for b, p, lm in zip(boxes[j], probs[j], points[j])
                ]
                results[i] = sorted(dets, key=lambda d: d.area, reverse=True)
        return results

    def _shrink(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        h, w = frame.shape[:2]
        if not self.max_side or max(h, w) <= self.max_side:
            return np.ascontiguousarray(frame), 1.0
        scale = self.max_side / max(h, w)
        small = cv2.resize(frame, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        return small, scale


def detector_for(
    embedder: Embedder,
    threads: int = 1,
    min_face_size: int = DETECT_MIN_FACE,
    max_side: int | None = DETECT_MAX_SIDE,
) -> FaceDetector:
    """The detector that goes with `embedder`: MTCNN on onnxruntime when the embedder runs there and its export
    has the detector's files beside it (no torch), else facenet-pytorch's on the embedder's device.
    (`identify --all-faces` searches whole frames for smaller faces: `min_face_size`, `max_side`.)"""
    if embedder.runtime == "onnx":
        from .mtcnn_onnx import has_detector

        # without facenet-pytorch (the slim install) missing detector files are the error to name
        if has_detector(embedder.source) or not _installed("facenet_pytorch"):
            return FaceDetector(
                min_face_size=min_face_size, max_side=max_side, onnx_stages=embedder.source, threads=threads
            )
    return FaceDetector(device=embedder.device, min_face_size=min_face_size, max_side=max_side)


def _installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a finder that refuses the module outright
        return False


class FacePipeline:
    """detector + embedder: frame -> the largest face's crop and embedding."""

    def __init__(self, embedder: Embedder, detector: FaceDetector | None = None):
        self.embedder = embedder
        self.spec = embedder.spec
        self.detector = detector or detector_for(embedder)

    def crop(self, frame_rgb: np.ndarray, det: Detection) -> np.ndarray:
        return crop_face(frame_rgb, det.box, det.landmarks, self.spec)

    def embed_crops(self, crops: list[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """uint8 crops of side spec.crop_size -> (N, 512) float32 L2-normalised."""
        if not crops:
            return np.zeros((0, EMBEDDING_DIM), np.float32)
        out = []
        for i in range(0, len(crops), batch_size):
            if self.embedder.forward is not None:  # another runtime: numpy in and out, no torch
                out.append(self.embedder.forward(to_network_array(crops[i : i + batch_size], self.spec)))
                continue
            x = to_network_input(crops_to_tensor(crops[i : i + batch_size]), self.spec)
            out.append(self.embedder.embed_batch(x).numpy())
        return np.concatenate(out).astype(np.float32)

    def analyze(self, frame_rgb: np.ndarray, embed: bool = True) -> FaceResult:
        """Detect, keep the largest face (noting when there were several), crop and embed it."""
        result = FaceResult(detections=self.detector.detect(frame_rgb))
        if result.face is None:
            h, w = frame_rgb.shape[:2]
            result.miss = f"no face (image is {w}x{h})" if self.detector.too_small(frame_rgb) else "no face found"
            return result
        if len(result.detections) > 1:
            result.notes.append(f"{len(result.detections)} faces found; using the largest")
        result.crop = self.crop(frame_rgb, result.face)
        if embed:
            result.embedding = self.embed_crops([result.crop])[0]
        return result
