"""The recognition network (facenet-pytorch's InceptionResnetV1) and where its weights come from.

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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .calibration import Calibration, read_calibration_file
from .checkpoint import Checkpoint, is_checkpoint, load_checkpoint
from ..core.device import resolve_device
from ..core.errors import FaceIDError
from .embeddings import EMBEDDING_DIM
from .options import default_model
from .preprocessing import PreprocessSpec, VGGFACE2_SPEC

VGGFACE2_URL = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt"
WEIGHTS_ENV = "FACEID_WEIGHTS"
DEFAULT_THRESHOLD = 0.6  # the seed's fixed cosine threshold; used only when no calibrated one exists


def build_backbone() -> nn.Module:
    """InceptionResnetV1 without a classifier: input (N, 3, 160, 160) normalised, output (N, 512) L2-normed."""
    from facenet_pytorch import InceptionResnetV1

    return InceptionResnetV1(pretrained=None, classify=False)


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
            if not path.is_file():
                raise FaceIDError(f"The weights file given by {origin} does not exist: {path}.", "weights")
            return path
    cached = vggface2_cache_path()
    if cached.is_file():
        return cached
    if not download:
        raise FaceIDError(_offline_message(f"none given and none cached at {cached}"), *WEIGHT_SETTINGS)
    return download_vggface2()


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


@dataclass
class Embedder:
    """A ready-to-use network: eval mode, on its device, with the spec and threshold that belong to it."""

    model: nn.Module | None  # None when `forward` runs another runtime
    spec: PreprocessSpec
    threshold: float
    threshold_calibrated: bool
    fingerprint: str
    source: str  # human-readable: which file the weights came from
    device: torch.device
    calibration: Calibration | None = None  # score -> FAR table (checkpoint or --calibration); None: uncalibrated
    # Another runtime's whole EmbeddingNetwork (onnxruntime, faceid.export): normalised input -> final
    # embeddings. When set, `model` is None: the torch network is never built.
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def runtime(self) -> str:
        return "torch" if self.forward is None else "onnx"

    def with_flip(self, flip: bool) -> Embedder:
        """This network with mirror-averaging on or off, as a new Embedder whose fingerprint covers the new spec
        (so caches and galleries keep the two apart); this one is left as it is."""
        if flip == self.spec.flip:
            return self
        if self.model is None:
            raise FaceIDError("An ONNX export has its mirror-averaging built in; use the torch runtime to change it.")
        spec = replace(self.spec, flip=flip)
        return replace(self, spec=spec, fingerprint=backbone_fingerprint(self.model, spec))

    def embed_batch(self, x: torch.Tensor) -> torch.Tensor:
        """x: normalised (N, 3, size, size) -> (N, 512) on CPU."""
        if self.forward is not None:
            return self.forward(x)
        assert self.model is not None  # an Embedder has either another runtime's `forward` or a torch `model`
        return embed(self.model, x.to(self.device), flip=self.spec.flip).cpu()


def load_embedder(
    model_path: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    crop: str | None = None,
    device: str | None = None,
    download: bool = True,
    calibration: str | os.PathLike | None = None,
) -> Embedder:
    """Load a fine-tuned checkpoint (its spec and calibrated threshold come with it) or backbone weights.

    model_path: a checkpoint written by the trainer. Else `weights` (a state_dict file, $FACEID_WEIGHTS or
    VGGFace2) with the spec of `crop` ("box", VGGFace2's style, by default) and the seed's fixed threshold.
    calibration: a table file from `evaluate_model.py --calibrate` for these weights (replaces a checkpoint's).
    """
    dev = resolve_device(device)
    ckpt = load_checkpoint(model_path) if model_path is not None else None  # a bad field fails before the build
    model = build_backbone()
    if ckpt is not None:
        load_backbone_weights(model, ckpt.model, str(model_path))
        spec = PreprocessSpec.from_dict(ckpt.preprocess)
        threshold = ckpt.threshold
        calibrated = threshold is not None
        source = str(model_path)
        table = None if ckpt.calibration is None else Calibration.from_dict(ckpt.calibration, where=str(model_path))
    else:
        path = resolve_weights(weights, download=download)
        load_backbone_weights(model, read_state_dict(path), str(path))
        spec = VGGFACE2_SPEC if crop in (None, "box") else PreprocessSpec(crop=crop)
        threshold, calibrated, source, table = None, False, str(path), None
    model.eval().to(dev)
    fingerprint = backbone_fingerprint(model, spec)
    if calibration is not None:
        table = read_calibration_file(calibration, fingerprint)
    return Embedder(
        model=model,
        spec=spec,
        threshold=float(threshold if threshold is not None else DEFAULT_THRESHOLD),
        threshold_calibrated=calibrated,
        fingerprint=fingerprint,
        source=source,
        device=dev,
        calibration=table,
    )


def choose_embedder(
    model: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    crop: str | None = None,
    device: str | None = None,
    download: bool = True,
    calibration: str | os.PathLike | None = None,
) -> Embedder:
    """The embedder the model options select (`options.default_model`): a checkpoint, else backbone weights
    ($FACEID_WEIGHTS, torch's cache, or a download when allowed)."""
    model = default_model(model, weights, crop)
    if model:
        return load_embedder(model_path=model, device=device, calibration=calibration)
    return load_embedder(weights=weights, crop=crop, device=device, download=download, calibration=calibration)


def optimized_for_cpu(embedder: Embedder) -> tuple[Embedder, str]:
    """(embedder, note): a new Embedder whose network is traced and frozen for CPU inference (BatchNorm folded
    into the convolutions, oneDNN layouts; about 40% less time per embedding for a one-off ~2 s trace), and a
    one-line note of what runs. The given embedder is left as it is, and is returned unchanged where tracing
    does not apply or fails. The fingerprint is kept (same weights); the traced network is checked against the
    eager one on a fixed input before it is used."""
    import warnings

    if embedder.forward is not None:
        return embedder, f"network: {embedder.runtime}"
    if embedder.device.type != "cpu":
        return embedder, "network: eager (not on CPU)"
    model = embedder.model
    assert model is not None  # an Embedder without another runtime's `forward` has a torch `model`
    if isinstance(model, torch.jit.ScriptModule):
        return embedder, "network: traced and frozen for CPU"
    probe = torch.randn(3, 3, embedder.spec.size, embedder.spec.size, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.compile
        try:
            traced = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model, probe[:2])))
            error = float((traced(probe) - model(probe)).abs().max())
        except RuntimeError as err:
            return embedder, f"network: eager (tracing failed: {str(err)[:80]})"
    if error > 1e-3:
        return embedder, f"network: eager (the traced network differed by {error:.1e})"
    return replace(embedder, model=traced), "network: traced and frozen for CPU"
