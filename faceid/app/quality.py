"""The quality gate: is this face good enough to register or verify with?

A template averaged from blurred, dark, tiny or turned faces matches its owner badly and strangers well,
so every sample passes the gate first, and a rejected frame says why in a short phrase ("too blurry").

Pose comes from MTCNN's five landmarks (left eye, right eye, nose, left and right mouth corner, "left" =
image left), no extra model:
- roll: the angle of the eye line against the horizontal;
- yaw: how far the nose sits from the eye midpoint along the eye line, as a fraction of the inter-ocular
  distance. The nose tip stands about half an inter-ocular distance in front of the eyes, so
  ``yaw_deg ~= atan(ratio / 0.5)``: a rough angle, good for "near frontal?" and "turned left?" and
  unchanged when a flat photo is tilted (both lengths shrink by the same factor).
Positive yaw: the nose is toward the image's right, i.e. the subject turned to *their* left as a
(non-mirrored) camera sees it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

NOSE_DEPTH_RATIO = 0.5  # nose-tip depth in front of the eye plane / inter-ocular distance (anthropometric)


@dataclass(frozen=True)
class QualityThresholds:
    """Limits a sample must meet. Defaults chosen on the shared webcam-like clips (see the report)."""

    min_face_px: float = 80.0  # shorter side of the detection box, frame pixels
    min_confidence: float = 0.95  # MTCNN probability
    min_sharpness: float = 25.0  # variance of the Laplacian of the grey face, rescaled to 112 px
    min_brightness: float = 50.0  # mean grey level of the face, 0..255
    max_brightness: float = 225.0
    max_yaw_deg: float = 25.0
    max_roll_deg: float = 20.0


@dataclass(frozen=True)
class Pose:
    yaw_deg: float
    roll_deg: float
    yaw_ratio: float


@dataclass
class QualityReport:
    """The verdict on one face: `ok`, the reasons it failed (short phrases) and the measured values."""

    ok: bool
    reasons: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        return "ok" if self.ok else ", ".join(self.reasons)

    def to_dict(self) -> dict:
        return asdict(self)


def head_pose(landmarks: np.ndarray) -> Pose:
    """Yaw and roll from MTCNN's five landmarks (see the module docstring for the geometry)."""
    lm = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    left_eye, right_eye, nose = lm[0], lm[1], lm[2]
    eye_vec = right_eye - left_eye
    iod = float(np.hypot(*eye_vec))
    if iod < 1e-6:
        return Pose(yaw_deg=90.0, roll_deg=0.0, yaw_ratio=float("inf"))
    roll = math.degrees(math.atan2(eye_vec[1], eye_vec[0]))
    ratio = float(np.dot(nose - (left_eye + right_eye) / 2, eye_vec / iod) / iod)
    yaw = math.degrees(math.atan(ratio / NOSE_DEPTH_RATIO))
    return Pose(yaw_deg=yaw, roll_deg=roll, yaw_ratio=ratio)


def sharpness(face_rgb: np.ndarray) -> float:
    """Variance of the Laplacian on the grey face rescaled to 112 px wide: blur lowers it at any face size."""
    grey = cv2.cvtColor(face_rgb, cv2.COLOR_RGB2GRAY)
    h, w = grey.shape
    if w != 112 and w > 0:
        grey = cv2.resize(grey, (112, max(1, round(h * 112 / w))), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def face_region(frame_rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The detection box cut from the frame (clipped to it), for brightness and sharpness."""
    h, w = frame_rgb.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return np.zeros((2, 2, 3), np.uint8)
    return frame_rgb[y1:y2, x1:x2]


def assess(frame_rgb: np.ndarray, detection, limits: QualityThresholds = QualityThresholds()) -> QualityReport:
    """Check one detection (a `faceid.model.face.Detection`) in its frame against `limits`."""
    region = face_region(frame_rgb, detection.box)
    pose = head_pose(detection.landmarks)
    grey_mean = float(cv2.cvtColor(region, cv2.COLOR_RGB2GRAY).mean())
    m = {
        "face_px": round(detection.size, 1),
        "confidence": round(float(detection.prob), 4),
        "sharpness": round(sharpness(region), 1),
        "brightness": round(grey_mean, 1),
        "yaw_deg": round(pose.yaw_deg, 1),
        "roll_deg": round(pose.roll_deg, 1),
    }
    reasons = []
    if m["face_px"] < limits.min_face_px:
        reasons.append(f"face too small ({m['face_px']:.0f} px < {limits.min_face_px:.0f}; come closer)")
    if m["confidence"] < limits.min_confidence:
        reasons.append(f"unsure it is a face (confidence {m['confidence']:.2f})")
    if m["brightness"] < limits.min_brightness:
        reasons.append("too dark")
    elif m["brightness"] > limits.max_brightness:
        reasons.append("too bright")
    if m["sharpness"] < limits.min_sharpness:
        reasons.append("too blurry")
    if abs(m["yaw_deg"]) > limits.max_yaw_deg:
        reasons.append("face turned sideways; look at the camera")
    if abs(m["roll_deg"]) > limits.max_roll_deg:
        reasons.append("head tilted; hold it upright")
    return QualityReport(ok=not reasons, reasons=reasons, metrics=m)
