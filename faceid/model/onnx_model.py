"""The ONNX file format of a faceid embedder, and running one on onnxruntime (what `export` writes, read here).

The file holds the whole `embedder.EmbeddingNetwork` (backbone, mirror-and-sum when the spec says ``flip``,
L2 normalisation), so its output is the embedding the gallery stores, with no code around it:

- input ``input``: float32 (batch, 3, size, size), RGB, ``(pixel - 127.5) / 128`` (about -1..1); the
  batch dimension is dynamic. `size` and the crop that produces it are in the metadata.
- output ``embedding``: float32 (batch, 512), L2-normalised: a dot product of two is their cosine.
- metadata (``metadata_props``, JSON values): ``faceid.format``, ``faceid.fingerprint`` (`onnx_graph.fingerprint`
  of the file's own graph and weights: the app computes it again and refuses a file whose claim differs), every
  key of `checkpoint.INFERENCE_KEYS` except the weights: ``faceid.preprocess`` (the crop the network expects),
  ``faceid.threshold``, the calibration and the validation record, each checked as a checkpoint's fields are; and
  ``faceid.sources``, the sha256 of the checkpoint it was exported from and of the inference checkpoint written
  with it.

Before onnxruntime sees a byte, `onnx_graph.read_onnx_file` checks the file (size with external data, the
export's operators, the memory its shapes would take).

onnxruntime is optional: imported lazily, and its absence is one sentence.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..core.errors import FaceIDError
from ..core.report import command
from ..core.validate import shown
from .calibration import Calibration
from .onnx_graph import MAX_ONNX_BYTES as MAX_ONNX_BYTES  # re-exported: the detector's reader takes it from here
from .onnx_graph import fingerprint, read_onnx_file
from .onnx_graph import require_module as require_module  # re-exported: the exporters take it from here

ONNX_FORMAT = "faceid-onnx-1"
INPUT_NAME, OUTPUT_NAME = "input", "embedding"
META_PREFIX = "faceid."
MAX_META_CHARS = 4 << 20  # one metadata value (a calibration table is ~100 kB)
SHA256_HEX = 64


def runtime_error_text(err: BaseException, limit: int = 200) -> str:
    """onnxruntime's message as words a sentence can hold: its "[ONNXRuntimeError] : 7 : INVALID_PROTOBUF :"
    prefix dropped, control characters removed, cut at a word (never mid-word) when long."""
    import re

    from ..core.validate import clean_text

    text = clean_text(re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", str(err).strip()), 10 * limit)
    text = text.rstrip(".") or type(err).__name__
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " ..."
    return text


class OnnxForward:
    """An onnxruntime session as a callable: normalised float32 NCHW array -> (N, 512) embeddings array. The file
    is checked first (`onnx_graph.read_onnx_file`: size with external data, operators, memory) and onnxruntime is
    given the checked bytes, never the path."""

    def __init__(self, path: str | os.PathLike, threads: int = 1):
        ort = require_module("onnxruntime", "run the embedder on onnxruntime (or use --runtime torch)")
        self.path = path = Path(path)
        self.file = read_onnx_file(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(self.file.data, options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types for every kind of bad file
            raise FaceIDError(f"{path} is not a usable ONNX model (onnxruntime: {runtime_error_text(err)}).") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if [i.name for i in inputs] != [INPUT_NAME] or OUTPUT_NAME not in [o.name for o in outputs]:
            raise FaceIDError(
                f"{path} is not a faceid embedder (expected input {INPUT_NAME!r} and output "
                f"{OUTPUT_NAME!r}); write one with {command('export_model.py')}."
            )
        self.metadata = self.file.metadata
        self.file = replace(self.file, data=b"")  # onnxruntime holds its own copy now

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Normalised float32 (N, 3, size, size) numpy input -> (N, 512) embeddings (no torch)."""
        try:
            return self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x, np.float32)})[0]
        except Exception as err:  # a graph that passed the checks but fails on this batch: still one sentence
            raise FaceIDError(
                f"The ONNX model {self.path} failed on a batch (onnxruntime: {runtime_error_text(err)})."
            ) from None


def read_metadata(forward: OnnxForward, path: Path) -> dict:
    """The faceid metadata of an ONNX file as Python values, every field checked as a checkpoint's are
    (`inference_fields.check_fields`, through `faceid.core.validate`); one sentence when it isn't ours."""
    from ..core.validate import Fields, load_json
    from .inference_fields import check_fields

    meta = {}
    for key, value in forward.metadata.items():
        if key.startswith(META_PREFIX):
            if len(value) > MAX_META_CHARS:
                raise FaceIDError(f"{path} has a faceid metadata entry of {len(value):,} characters; export it again.")
            meta[key[len(META_PREFIX) :]] = load_json(value, f"The faceid metadata {key} of {path}")
    if meta.get("format") != ONNX_FORMAT or not isinstance(meta.get("preprocess"), dict):
        raise FaceIDError(
            f"{path} was not written by {command('export_model.py')} (no faceid metadata); export it again."
        )
    check_fields(meta, str(path), kind="ONNX model")
    f = Fields(meta, f"ONNX model {path}")
    if f.sub("preprocess").whole("size", 1, 1 << 16, default=160) != forward.file.input_size:
        raise f.error(
            "preprocess.size", meta["preprocess"].get("size"), f"{forward.file.input_size}, the side of its input"
        )
    sources = f.items("sources", 4, default=[])
    if not all(
        isinstance(s, str) and len(s) == SHA256_HEX and all(c in "0123456789abcdef" for c in s) for s in sources
    ):
        raise f.error("sources", sources, "the sha256 of the checkpoints it was exported from")
    return meta


def load_onnx_embedder(path: str | os.PathLike, threads: int = 1):
    """An Embedder whose network runs on onnxruntime (CPU); spec, threshold and tables from the metadata (checked),
    the fingerprint computed from the file's weights and graph (`onnx_graph.fingerprint`), never read from it.
    Imports no torch."""
    from .embedder import DEFAULT_THRESHOLD, Embedder
    from .preprocessing import PreprocessSpec
    from .validation_record import read_record

    path = Path(path)
    forward = OnnxForward(path, threads)
    meta = read_metadata(forward, path)

    spec = PreprocessSpec.from_dict(meta["preprocess"])
    computed = fingerprint(forward.file.proto, spec.to_dict())
    forward.file = replace(forward.file, proto=None)  # the parsed weights are not needed any more
    claimed = meta.get("fingerprint")
    if claimed is not None and claimed != computed:
        raise FaceIDError(
            f"{path} claims the model fingerprint {shown(claimed)}, but its weights and graph give {computed}: it "
            f"was changed after export, or is another model; export it again.",
        )
    threshold = meta.get("threshold")
    table = meta.get("calibration")
    table = None if table is None else Calibration.from_dict(table, where=str(path))
    return Embedder(
        model=None,
        spec=spec,
        threshold=float(threshold if threshold is not None else DEFAULT_THRESHOLD),
        threshold_calibrated=threshold is not None,
        fingerprint=computed,
        source=str(path),
        device="cpu",
        forward=forward,
        calibration=table,
        validation=read_record(meta.get("validation"), str(path)),
    )
