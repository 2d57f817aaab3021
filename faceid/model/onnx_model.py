"""The ONNX file format of a faceid embedder, and running one on onnxruntime (what `export` writes, read here).

The file holds the whole `embedder.EmbeddingNetwork` (backbone, mirror-and-sum when the spec says ``flip``,
L2 normalisation), so its output is the embedding the gallery stores, with no code around it:

- input ``input``: float32 (batch, 3, size, size), RGB, ``(pixel - 127.5) / 128`` (about -1..1); the
  batch dimension is dynamic. `size` and the crop that produces it are in the metadata.
- output ``embedding``: float32 (batch, 512), L2-normalised: a dot product of two is their cosine.
- metadata (``metadata_props``, JSON values): ``faceid.format``, ``faceid.fingerprint`` (the same
  `backbone_fingerprint` the torch network gets, so a gallery registered on one runtime is used by
  the other), every key of `checkpoint.INFERENCE_KEYS` except the weights: ``faceid.preprocess``
  (the crop the network expects), ``faceid.threshold`` and the calibration; and ``faceid.sources``, the
  sha256 of the checkpoint it was exported from and of the inference checkpoint written with it.

onnxruntime is optional: imported lazily, and its absence is one sentence.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..core.errors import FaceIDError
from ..core.report import command
from .calibration import Calibration

ONNX_FORMAT = "faceid-onnx-1"
INPUT_NAME, OUTPUT_NAME = "input", "embedding"
META_PREFIX = "faceid."
MAX_ONNX_BYTES = 2 << 30  # protobuf's own limit; read before handing a file to onnxruntime


def require_module(module: str, purpose: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise FaceIDError(
            f"{module} is not installed, which is needed to {purpose}; install the versions pinned "
            f"in requirements.txt and requirements-dev.txt (pip install -r requirements-dev.txt)."
        ) from None


class OnnxForward:
    """An onnxruntime session as a callable: normalised float32 NCHW array -> (N, 512) embeddings array."""

    def __init__(self, path: str | os.PathLike, threads: int = 1):
        ort = require_module("onnxruntime", "run the embedder on onnxruntime (or use --runtime torch)")
        path = Path(path)
        try:
            size = path.stat().st_size
        except OSError as err:
            raise FaceIDError(f"Cannot read the ONNX model {path}: {err.strerror}.") from None
        if size > MAX_ONNX_BYTES:
            raise FaceIDError(f"{path} is {size / 2**30:.1f} GiB, larger than any ONNX model (2 GiB); refusing it.")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types for every kind of bad file
            raise FaceIDError(f"{path} is not a usable ONNX model ({str(err).splitlines()[0][:150]}).") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if [i.name for i in inputs] != [INPUT_NAME] or OUTPUT_NAME not in [o.name for o in outputs]:
            raise FaceIDError(
                f"{path} is not a faceid embedder (expected input {INPUT_NAME!r} and output "
                f"{OUTPUT_NAME!r}); write one with {command('export_model.py')}."
            )
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Normalised float32 (N, 3, size, size) numpy input -> (N, 512) embeddings (no torch)."""
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x, np.float32)})[0]


def read_metadata(forward: OnnxForward, path: Path) -> dict:
    """The faceid metadata of an ONNX file as Python values; one sentence when it isn't ours."""
    meta = {}
    for key, value in forward.metadata.items():
        if key.startswith(META_PREFIX):
            try:
                meta[key[len(META_PREFIX) :]] = json.loads(value)
            except json.JSONDecodeError:
                raise FaceIDError(f"{path} has unreadable faceid metadata ({key}); export it again.") from None
    if (
        meta.get("format") != ONNX_FORMAT
        or not isinstance(meta.get("preprocess"), dict)
        or not isinstance(meta.get("fingerprint"), str)
    ):
        raise FaceIDError(
            f"{path} was not written by {command('export_model.py')} (no faceid metadata); export it again."
        )
    return meta


def load_onnx_embedder(path: str | os.PathLike, threads: int = 1):
    """An Embedder whose network runs on onnxruntime (CPU); spec, threshold and fingerprint from the metadata.
    Imports no torch."""
    from .embedder import DEFAULT_THRESHOLD, Embedder
    from .preprocessing import PreprocessSpec

    path = Path(path)
    forward = OnnxForward(path, threads)
    meta = read_metadata(forward, path)
    threshold = meta.get("threshold")
    if threshold is not None and not (isinstance(threshold, (int, float)) and -1 <= threshold <= 1):
        raise FaceIDError(f"{path} records an invalid threshold {threshold!r}; export it again.")
    table = meta.get("calibration")
    table = None if table is None else Calibration.from_dict(table, where=str(path))
    return Embedder(
        model=None,
        spec=PreprocessSpec.from_dict(meta["preprocess"]),
        threshold=float(threshold if threshold is not None else DEFAULT_THRESHOLD),
        threshold_calibrated=threshold is not None,
        fingerprint=meta["fingerprint"],
        source=str(path),
        device="cpu",
        forward=forward,
        calibration=table,
    )
