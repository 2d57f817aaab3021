"""The embedder: a network with everything that belongs to it (crop spec, threshold, calibration table,
fingerprint, device), loaded from a checkpoint or from backbone weights, optionally on another runtime.

    >>> from faceid.model.embedder import load_embedder
    >>> e = load_embedder(weights="../shared/models/pins90_scratch_irv1_fp16.pt")  # doctest: +SKIP
    >>> e.embed_batch(x).shape  # x: (N, 3, 160, 160) normalised network input  # doctest: +SKIP
    torch.Size([N, 512])
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable

import numpy as np

from ..core.device import resolve_device
from ..core.errors import FaceIDError
from .calibration import Calibration, read_calibration_file
from .options import default_model
from .preprocessing import VGGFACE2_SPEC, PreprocessSpec
from .validation_record import read_record

if TYPE_CHECKING:  # torch is imported where the torch network is built or run: an ONNX embedder needs none
    import torch
    from torch import nn

DEFAULT_THRESHOLD = 0.6  # the seed's fixed cosine threshold; used only when no calibrated one exists


@dataclass
class Embedder:
    """A ready-to-use network: eval mode, on its device, with the spec and threshold that belong to it."""

    model: nn.Module | None  # None when `forward` runs another runtime
    spec: PreprocessSpec
    threshold: float
    threshold_calibrated: bool
    fingerprint: str
    source: str  # human-readable: which file the weights came from
    device: torch.device | str  # "cpu" for another runtime (no torch needed)
    calibration: Calibration | None = None  # score -> FAR table (checkpoint or --calibration); None: uncalibrated
    validation: Calibration | None = None  # the model's own validation record (`validation_record`), if it has one
    # Another runtime's whole EmbeddingNetwork (onnxruntime, faceid.model.onnx_model): normalised float32 NCHW
    # numpy input -> final (N, 512) embeddings. When set, `model` is None: the torch network is never built.
    forward: Callable[[np.ndarray], np.ndarray] | None = None

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
        from .network import backbone_fingerprint

        spec = replace(self.spec, flip=flip)
        return replace(self, spec=spec, fingerprint=backbone_fingerprint(self.model, spec))

    def embed_batch(self, x: torch.Tensor) -> torch.Tensor:
        """x: normalised (N, 3, size, size) -> (N, 512) on CPU."""
        import torch

        from .network import embed

        if self.forward is not None:
            return torch.from_numpy(self.forward(x.detach().cpu().numpy()))
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
    from .checkpoint import load_checkpoint, read_state_dict
    from .network import DEFAULT_NETWORK, backbone_fingerprint, build_backbone, load_backbone_weights, resolve_weights

    dev = resolve_device(device)
    ckpt = load_checkpoint(model_path) if model_path is not None else None  # a bad field fails before the build
    model = build_backbone(ckpt.network if ckpt is not None else DEFAULT_NETWORK)
    if ckpt is not None:
        load_backbone_weights(model, ckpt.model, str(model_path))
        spec = PreprocessSpec.from_dict(ckpt.preprocess)
        threshold = ckpt.threshold
        calibrated = threshold is not None
        source = str(model_path)
        table = None if ckpt.calibration is None else Calibration.from_dict(ckpt.calibration, where=str(model_path))
        record = read_record(ckpt.validation, str(model_path))
    else:
        path = resolve_weights(weights, download=download)
        load_backbone_weights(model, read_state_dict(path), str(path))
        spec = VGGFACE2_SPEC if crop in (None, "box") else PreprocessSpec(crop=crop)
        threshold, calibrated, source, table, record = None, False, str(path), None, None
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
        validation=record,
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
    import torch

    if str(embedder.device) != "cpu":
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
