"""Classification heads used only during training: softmax (the seed's), ArcFace and CosFace.

All heads take the backbone's raw 512-d feature (InceptionResnetV1's ``last_bn`` output, before the L2
normalisation the app applies) and the class labels, and return logits for ``F.cross_entropy``.

- ``softmax``: a plain ``Linear(512, classes)`` on the raw feature, exactly the seed's ``classify=True``
  model (facenet-pytorch's ``logits`` layer). It optimises closed-set accuracy; nothing ties the embedding's
  angles to identity, which is what verification measures.
- ``arcface`` (Deng et al. 2019): ``s * cos(theta_y + m)`` for the true class, ``s * cos(theta_j)`` otherwise,
  theta = angle between the normalised feature and the normalised class weight. Additive angular margin.
- ``cosface`` (Wang et al. 2018): ``s * (cos(theta_y) - m)`` for the true class. Additive cosine margin.

The margin heads compute in float32 even under autocast: the margin's effect on a cosine near 1 is below
bf16's resolution. Called without labels (evaluation) they return ``s * cos`` with no margin, whose argmax
is the closed-set prediction.

``TrainNet`` joins backbone and head into one module, so DDP synchronises both and one optimizer owns both.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import FaceIDError

HEADS = ("softmax", "arcface", "cosface")
# Standard settings from the papers / insightface (s=64; ArcFace m=0.5; CosFace m=0.35). Softmax has neither.
DEFAULT_SCALE = {"arcface": 64.0, "cosface": 64.0}
DEFAULT_MARGIN = {"arcface": 0.5, "cosface": 0.35}


class SoftmaxHead(nn.Module):
    """The seed's classifier: logits = W f + b, f the raw 512-d feature. (N, 512) -> (N, classes)."""

    def __init__(self, embedding_dim: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(embedding_dim, num_classes)

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc(features)


class MarginHead(nn.Module):
    """ArcFace / CosFace: cosine logits against normalised class centres, margin on the true class.

    features: (N, 512) any float dtype; labels: (N,) int64 in [0, classes) or None. Returns float32
    (N, classes) logits scaled by `scale`.
    """

    def __init__(self, kind: str, embedding_dim: int, num_classes: int, scale: float, margin: float):
        super().__init__()
        if kind not in ("arcface", "cosface"):
            raise ValueError(kind)
        self.kind, self.scale, self.margin = kind, float(scale), float(margin)
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        nn.init.normal_(self.weight, std=0.01)
        # ArcFace: past theta = pi - m, cos(theta + m) stops decreasing; insightface's fallback keeps the
        # target logit monotonic there: cos(theta) - m sin(m).
        self._cos_m, self._sin_m = math.cos(margin), math.sin(margin)
        self._th, self._mm = math.cos(math.pi - margin), math.sin(math.pi - margin) * margin

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        with torch.autocast(device_type=features.device.type, enabled=False):
            cos = F.linear(F.normalize(features.float(), dim=1), F.normalize(self.weight.float(), dim=1))
            cos = cos.clamp(-1.0, 1.0)
            if labels is None:
                return cos * self.scale
            target = cos.gather(1, labels.view(-1, 1))
            if self.kind == "arcface":
                sin = torch.sqrt((1.0 - target * target).clamp_min(1e-7))
                phi = target * self._cos_m - sin * self._sin_m
                phi = torch.where(target > self._th, phi, target - self._mm)
            else:
                phi = target - self.margin
            logits = cos.scatter(1, labels.view(-1, 1), phi)
            return logits * self.scale


def build_head(
    name: str, num_classes: int, embedding_dim: int = 512, scale: float | None = None, margin: float | None = None
) -> nn.Module:
    """A head by name ("softmax", "arcface", "cosface"); scale/margin None -> the standard values."""
    if name not in HEADS:
        raise FaceIDError(f"Unknown head {name!r}; choose one of {', '.join(HEADS)}.")
    if num_classes < 2:
        raise FaceIDError(f"Training needs at least 2 identities, got {num_classes}.")
    if name == "softmax":
        return SoftmaxHead(embedding_dim, num_classes)
    return MarginHead(
        name,
        embedding_dim,
        num_classes,
        DEFAULT_SCALE[name] if scale is None else scale,
        DEFAULT_MARGIN[name] if margin is None else margin,
    )


def head_config(name: str, num_classes: int, scale: float | None, margin: float | None) -> dict:
    """The plain dict stored in checkpoints to rebuild the head (`build_head(**head_config)`)."""
    return {
        "name": name,
        "num_classes": int(num_classes),
        "scale": DEFAULT_SCALE.get(name) if scale is None else float(scale),
        "margin": DEFAULT_MARGIN.get(name) if margin is None else float(margin),
    }


def raw_feature_backbone(backbone: nn.Module) -> nn.Module:
    """Make an InceptionResnetV1 return its raw ``last_bn`` output instead of the L2-normalised embedding.

    facenet-pytorch applies ``self.logits`` when ``classify`` is set; an Identity there yields the raw
    feature, and the state_dict keeps exactly the backbone keys the app loads (no ``logits.*``).
    """
    backbone.classify = True  # type: ignore[assignment]  # nn.Module's stub types unknown attributes as Tensor | Module
    backbone.logits = nn.Identity()
    return backbone


class TrainNet(nn.Module):
    """Backbone + head. forward(x (N,3,160,160) normalised, labels (N,)) -> (logits (N,C) fp32, features (N,512))."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = raw_feature_backbone(backbone)
        self.head = head

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(x)
        return self.head(features, labels).float(), features


class Normalized(nn.Module):
    """View of a raw-feature backbone that outputs what the app's backbone outputs: (N, 512) L2-normalised."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.backbone(x).float(), dim=1)
