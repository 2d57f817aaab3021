"""The recognition network: a registry of backbones, where their weights come from, how weights are loaded and
fingerprinted, and the module that turns the backbone's output into the embedding the app compares.

Weights sources, in the order `resolve_weights` tries them:
1. an explicit file (``--weights FILE``), 2. the ``FACEID_WEIGHTS`` environment variable,
3. the VGGFace2 file already in torch's cache (``$TORCH_HOME/checkpoints``), 4. a download of it.
Offline with none of these is one clear error that says how to fix it; weights are never faked.
We download and load the file ourselves (not facenet-pytorch's ``pretrained=``) so that it is opened
with ``torch.load(weights_only=True)``.

Embeddings: (N, 512) float32, L2-normalised; with ``flip`` the sum of the image's and its mirror's
outputs, re-normalised.
"""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import FaceIDError
from ..core.fileio import require_regular_file
from .embeddings import EMBEDDING_DIM
from .inference_fields import DEFAULT_NETWORK, NETWORK_NAMES
from .preprocessing import PreprocessSpec

VGGFACE2_URL = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt"
WEIGHTS_ENV = "FACEID_WEIGHTS"


def _inception_resnet_v1() -> nn.Module:
    """facenet-pytorch's InceptionResnetV1 without a classifier: input (N, 3, 160, 160) normalised, output
    (N, 512) L2-normalised; its raw 512-d feature is `last_bn`'s output (what the training heads take)."""
    from facenet_pytorch import InceptionResnetV1

    return InceptionResnetV1(pretrained=None, classify=False)


# name -> builder of a network without weights. The name is recorded in every checkpoint (`Checkpoint.network`)
# and in ONNX metadata, so a file says which network its weights are for; add an entry to train another.
NETWORKS: dict[str, Callable[[], nn.Module]] = {"inception_resnet_v1": _inception_resnet_v1}
assert tuple(NETWORKS) == NETWORK_NAMES  # the names model files are checked against (`inference_fields`)


def build_backbone(name: str = DEFAULT_NETWORK) -> nn.Module:
    """A network of the registry (`NETWORKS`), without weights; an unknown name is one sentence."""
    if name not in NETWORKS:
        raise FaceIDError(f"Unknown network {name!r}; this faceid knows {', '.join(sorted(NETWORKS))}.", "network")
    return NETWORKS[name]()


def vggface2_cache_path() -> Path:
    torch_home = Path(os.environ.get("TORCH_HOME", Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "torch"))
    return torch_home.expanduser() / "checkpoints" / Path(VGGFACE2_URL).name


WEIGHT_SETTINGS = ("weights", "from_scratch")  # what fixes "no weights": a file, or (training) none at all


def _offline_message(reason: str) -> str:
    return (
        f"No face-recognition weights available ({reason}). Download {VGGFACE2_URL} on a machine "
        f"with internet and give its path (or set {WEIGHTS_ENV}=FILE); training can also start from random "
        f"weights."
    )


def download_vggface2() -> Path:
    """Download the VGGFace2 weights into torch's cache (atomically: torch writes a temp file first)."""
    dest = vggface2_cache_path()
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(VGGFACE2_URL, str(dest), progress=True)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        raise FaceIDError(_offline_message(f"the VGGFace2 download failed: {err}"), *WEIGHT_SETTINGS) from None
    return dest


def resolve_weights(weights: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Find the initial weights file: explicit path, then $FACEID_WEIGHTS, then the cache, then download."""
    for candidate, origin in ((weights, "the weights setting"), (os.environ.get(WEIGHTS_ENV), WEIGHTS_ENV)):
        if candidate:
            path = Path(candidate).expanduser()
            named = "The weights file" if origin == "the weights setting" else f"The weights file named by {origin}"
            require_regular_file(path, named, "weights")
            return path
    cached = vggface2_cache_path()
    if cached.is_file():
        return cached
    if not download:
        raise FaceIDError(_offline_message(f"none given and none cached at {cached}"), *WEIGHT_SETTINGS)
    return download_vggface2()


def load_backbone_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "weights") -> None:
    """Load backbone weights, dropping classifier keys (``logits.*``: VGGFace2's 8631-way head)."""
    backbone = {k: v for k, v in state_dict.items() if not k.startswith("logits.")}
    try:
        missing, unexpected = model.load_state_dict(backbone, strict=False)
    except RuntimeError as err:  # a tensor of the wrong shape, e.g. another embedding size
        first = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line), str(err)[:160])
        raise FaceIDError(
            f"{source} does not fit InceptionResnetV1 with {EMBEDDING_DIM}-d embeddings ({first.rstrip('.')})."
        ) from None
    if missing or unexpected:
        raise FaceIDError(
            f"{source} does not fit InceptionResnetV1: {len(missing)} missing keys "
            f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})."
        )
    broken = next((k for k, v in backbone.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if broken is not None:
        raise FaceIDError(f"{source} holds non-finite weights (NaN or infinity in {broken!r}); it cannot embed faces.")


def backbone_fingerprint(model: nn.Module, spec: PreprocessSpec) -> str:
    """A short hash of the weights and the preprocessing: templates from different fingerprints don't compare."""
    import hashlib

    h = hashlib.sha256(repr(sorted(spec.to_dict().items())).encode())
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class EmbeddingNetwork(nn.Module):
    """The backbone plus what turns its output into the embedding the app compares: with `flip`, the sum of
    the image's and its mirror's outputs; then L2 normalisation. One module, so ONNX export writes all of it."""

    def __init__(self, backbone: nn.Module, flip: bool = True):
        super().__init__()
        self.backbone, self.flip = backbone, flip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.flip:
            return F.normalize(self.backbone(x).float(), dim=1)
        n = x.shape[0]
        both = self.backbone(torch.cat([x, torch.flip(x, dims=[3])])).float()  # one batch: fewer kernel launches
        return F.normalize(both[:n] + both[n:], dim=1)


@torch.no_grad()
def embed(model: nn.Module, x: torch.Tensor, flip: bool = True) -> torch.Tensor:
    """x: (N, 3, H, W) normalised network input -> (N, 512) float32 L2-normalised embeddings."""
    return EmbeddingNetwork(model, flip)(x)
