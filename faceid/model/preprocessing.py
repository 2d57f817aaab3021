"""The preprocessing spec: how a face becomes a network input, identical in training and in the app.

A checkpoint records its `PreprocessSpec`; the app, the evaluator and the trainer all call the functions
here with it, so the crop a network was trained on is the crop it sees at inference.

Crop styles:
- ``"aligned5"``: similarity transform of MTCNN's five landmarks (eyes, nose, mouth corners) onto the
  standard 112x112 ArcFace template, then resized to ``size`` (bilinear). This is the layout of
  insightface's CASIA-WebFace ``.rec`` files, so a network fine-tuned on them expects it.
- ``"box"``: facenet-pytorch's MTCNN crop: the detection box (plus ``margin`` pixels at output scale),
  resized to ``size``. This is what the VGGFace2 weights were published with.

torch is imported inside the functions that need it, so the app's list/delete start without it.

Network input: float32 NCHW RGB, ``size`` x ``size``, ``(x - 127.5) / 128`` (facenet-pytorch's
``fixed_image_standardization``), values in about [-1, 1].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..core.errors import FaceIDError

if TYPE_CHECKING:  # annotations only: torch is imported where it is used
    import torch

# Standard five-point template for 112x112 aligned faces (insightface / ArcFace), in pixels.
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
ALIGNED_SIZE = 112
CROP_STYLES = ("aligned5", "box")
PIXEL_CENTRE, PIXEL_SCALE = 127.5, 128.0  # fixed_image_standardization: (pixel - 127.5) / 128


@dataclass(frozen=True)
class PreprocessSpec:
    """How to turn a detected face into a network input. Stored in every checkpoint as a dict."""

    crop: str = "aligned5"  # "aligned5" or "box" (see module docstring)
    size: int = 160  # network input side in pixels
    margin: int = 0  # "box" only: extra pixels around the box, at output scale
    normalize: str = "fixed_image_standardization"  # (x - 127.5) / 128
    flip: bool = True  # embedding = L2-normalised sum of the image's and its mirror's outputs

    def __post_init__(self):
        if self.crop not in CROP_STYLES:
            raise FaceIDError(f"Unknown crop style {self.crop!r}; expected one of {', '.join(CROP_STYLES)}.")
        if self.normalize != "fixed_image_standardization":
            raise FaceIDError(f"Unknown normalisation {self.normalize!r}.")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessSpec":
        known = {k: d[k] for k in ("crop", "size", "margin", "normalize", "flip") if k in d}
        return cls(**known)

    @property
    def crop_size(self) -> int:
        """Side of the uint8 crop stored before resizing: 112 for aligned faces, else `size`."""
        return ALIGNED_SIZE if self.crop == "aligned5" else self.size


# The spec of the published VGGFace2 weights (facenet-pytorch's MTCNN defaults: 160 px, margin 0).
VGGFACE2_SPEC = PreprocessSpec(crop="box", size=160, margin=0, flip=True)
# The spec of networks trained on insightface-layout .rec files (CASIA-WebFace, pins90).
ALIGNED_SPEC = PreprocessSpec(crop="aligned5", size=160, flip=True)


def align_five_points(image_rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Warp a face onto the 112x112 template.

    image_rgb: HxWx3 uint8. landmarks: (5, 2) float pixel coords in MTCNN order (left eye, right eye,
    nose, left mouth corner, right mouth corner; "left" = image left). Returns 112x112x3 uint8.
    """
    src = np.asarray(landmarks, dtype=np.float32).reshape(5, 2)
    matrix, _ = cv2.estimateAffinePartial2D(src, ARCFACE_TEMPLATE_112, method=cv2.LMEDS)
    if matrix is None:
        raise FaceIDError("Could not align the face: its landmarks are degenerate.")
    return cv2.warpAffine(
        image_rgb,
        matrix,
        (ALIGNED_SIZE, ALIGNED_SIZE),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )


def box_crop(image_rgb: np.ndarray, box: np.ndarray, size: int, margin: int = 0) -> np.ndarray:
    """facenet-pytorch's crop: box + margin (in output pixels), clipped to the image, resized to size.

    Returns size x size x 3 uint8 (INTER_AREA, as facenet-pytorch does for numpy input).
    """
    h, w = image_rgb.shape[:2]
    x1, y1, x2, y2 = [float(v) for v in box]
    mx = margin * (x2 - x1) / (size - margin)
    my = margin * (y2 - y1) / (size - margin)
    x1, y1 = int(max(x1 - mx / 2, 0)), int(max(y1 - my / 2, 0))
    x2, y2 = int(min(x2 + mx / 2, w)), int(min(y2 + my / 2, h))
    if x2 - x1 < 2 or y2 - y1 < 2:
        raise FaceIDError("The face box lies outside the image.")
    return cv2.resize(image_rgb[y1:y2, x1:x2], (size, size), interpolation=cv2.INTER_AREA)


def crop_face(image_rgb: np.ndarray, box: np.ndarray, landmarks: np.ndarray | None, spec: PreprocessSpec) -> np.ndarray:
    """The crop `spec` asks for, as uint8 HxWx3 of side `spec.crop_size`."""
    if spec.crop == "aligned5":
        if landmarks is None:
            raise FaceIDError("This model needs five-point landmarks to align the face.")
        return align_five_points(image_rgb, landmarks)
    return box_crop(image_rgb, box, spec.size, spec.margin)


def center_crop(image_rgb: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Fallback crop for images where the detector found no face: the central square, resized.

    For the aligned style it takes the central 70% (LFW's deep-funneled faces fill about that much).
    """
    h, w = image_rgb.shape[:2]
    side = min(h, w)
    if spec.crop == "aligned5":
        side = int(side * 0.7)
    y0, x0 = (h - side) // 2, (w - side) // 2
    square = image_rgb[y0 : y0 + side, x0 : x0 + side]
    return cv2.resize(square, (spec.crop_size, spec.crop_size), interpolation=cv2.INTER_AREA)


def to_network_input(crops: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    """uint8 (or float 0..255) crops, NCHW or NHWC with 3 channels -> float32 NCHW, spec.size, normalised.

    The one place where resizing and normalisation happen, for training batches (CPU or GPU-decoded)
    and for inference alike. Output values lie in about [-1, 1].
    """
    import torch.nn.functional as F

    if crops.ndim != 4:
        raise ValueError(f"expected a 4-D batch, got shape {tuple(crops.shape)}")
    if crops.shape[1] != 3 and crops.shape[-1] == 3:
        crops = crops.permute(0, 3, 1, 2)
    x = crops.float()
    if x.shape[-1] != spec.size or x.shape[-2] != spec.size:
        x = F.interpolate(x, size=(spec.size, spec.size), mode="bilinear", align_corners=False, antialias=False)
    return (x - PIXEL_CENTRE) / PIXEL_SCALE


def to_network_array(crops: list[np.ndarray], spec: PreprocessSpec) -> np.ndarray:
    """`to_network_input` without torch, for onnxruntime: HxWx3 uint8 crops -> float32 NCHW, spec.size,
    normalised. OpenCV's bilinear resize of float pixels is torch's ``interpolate(bilinear)`` to within 0.003 of
    a grey level (tests/model/test_torch_free.py)."""
    size = (spec.size, spec.size)
    x = np.stack(
        [
            c.astype(np.float32)
            if c.shape[:2] == size
            else cv2.resize(c.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
            for c in crops
        ]
    )
    return np.ascontiguousarray(((x - PIXEL_CENTRE) / PIXEL_SCALE).transpose(0, 3, 1, 2), np.float32)


def crops_to_tensor(crops: list[np.ndarray]) -> torch.Tensor:
    """A list of equal-size HxWx3 uint8 numpy crops -> uint8 NCHW tensor."""
    import torch

    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()


def from_network_input(x: torch.Tensor) -> torch.Tensor:
    """The inverse of `to_network_input`'s normalisation: float NCHW in about [-1, 1] -> uint8 NCHW pixels
    (what a generator's output, trained on network input, looks like as an image)."""
    import torch

    return (x.detach().float() * 128.0 + 127.5).round_().clamp_(0, 255).to(torch.uint8)
