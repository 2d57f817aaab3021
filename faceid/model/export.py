"""Taking the model elsewhere: writing the ONNX file (`onnx_model` describes the format and runs it) and the
slim inference checkpoint beside it (export_model.py).

The export is checked before it is written: it must pass the checks every ONNX file gets before it runs
(`onnx_graph.read_onnx_file`: only the operators of `onnx_graph.EXPORT_OPS`, bounded memory), and onnxruntime must
reproduce torch's embeddings of a fixed batch (cosine >= MATCH_COSINE). onnx/onnxscript are needed to export; both are optional, imported lazily, and their
absence is one sentence. Without them everything runs on torch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from ..core.errors import FaceIDError
from ..core.fileio import atomic_write_bytes, sha256_file
from .checkpoint import INFERENCE_KEYS, Checkpoint, load_checkpoint, save_inference_checkpoint
from .mtcnn_onnx import export_detector
from .onnx_model import INPUT_NAME, META_PREFIX, ONNX_FORMAT, OUTPUT_NAME, OnnxForward, require_module
from .options import default_model
from .quantize import INT8_SAMPLES, check_int8_data, quantize_embedder

OPSET = 18
MATCH_COSINE = 0.9999  # onnxruntime's embeddings must agree with torch's at least this well


def _plain(value: Any) -> Any:
    """JSON fallback for tensors/arrays in calibration data."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in ONNX metadata")


def checkpoint_for_export(
    model: str | os.PathLike | None, weights: str | os.PathLike | None, crop: str | None, download: bool = False
) -> tuple[Checkpoint, str]:
    """(a checkpoint, where it came from) for the model the options select (`options.default_model`): a faceid
    checkpoint, or backbone weights with the spec of `crop` and no calibration."""
    from .embedder import choose_embedder

    model = default_model(model, weights, crop)
    if model:
        return load_checkpoint(model), str(model)
    embedder = choose_embedder(None, weights, crop, "cpu", download=download)
    assert embedder.model is not None  # choose_embedder always builds the torch network
    return Checkpoint(model=embedder.model.state_dict(), preprocess=embedder.spec.to_dict()), embedder.source


def export_onnx(
    checkpoint: Checkpoint, path: str | os.PathLike, opset: int = OPSET, sources: Sequence[str] = ()
) -> dict:
    """Write the checkpoint's EmbeddingNetwork as ONNX (dynamic batch, metadata as above) atomically, after
    checking that onnxruntime reproduces torch's embeddings. Returns what was written (for the report)."""
    import torch

    from .network import EmbeddingNetwork, build_backbone, load_backbone_weights
    from .onnx_graph import fingerprint
    from .preprocessing import PreprocessSpec

    onnx = require_module("onnx", "export to ONNX")
    require_module("onnxscript", "export to ONNX")
    spec = PreprocessSpec.from_dict(checkpoint.preprocess)
    backbone = build_backbone(checkpoint.network)
    load_backbone_weights(backbone, {k: v.float() for k, v in checkpoint.model.items()}, "the checkpoint")
    backbone.eval()
    network = EmbeddingNetwork(backbone, spec.flip).eval()
    example = torch.zeros(2, 3, spec.size, spec.size)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.export-{os.getpid()}")
    try:
        with torch.no_grad():
            program = torch.onnx.export(
                network,
                (example,),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},),
                opset_version=opset,
                dynamo=True,
                verbose=False,
            )
        assert program is not None  # torch.onnx.export returns the ONNXProgram when dynamo=True
        proto = program.model_proto
        # the file's own fingerprint, of its graph and weights (BatchNorm folded in): what the app computes again
        meta: dict[str, Any] = {"format": ONNX_FORMAT, "fingerprint": fingerprint(proto, spec.to_dict())}
        meta.update({k: getattr(checkpoint, k) for k in INFERENCE_KEYS if k != "model"})
        meta["preprocess"] = spec.to_dict()
        meta["sources"] = list(sources)
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = META_PREFIX + key, json.dumps(value, default=_plain)
        proto.doc_string = (
            f"faceid embedder: {INPUT_NAME} float32 (batch, 3, {spec.size}, {spec.size}) RGB "
            f"(x - 127.5) / 128 -> {OUTPUT_NAME} float32 (batch, 512) L2-normalised"
        )
        onnx.checker.check_model(proto)
        data = proto.SerializeToString()
        atomic_write_bytes(tmp, data)
        cos = check_onnx_matches(tmp, network, spec.size)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return {
        "path": str(path),
        "bytes": len(data),
        "fingerprint": meta["fingerprint"],
        "spec": spec.to_dict(),
        "min_cosine_vs_torch": cos,
    }


def check_onnx_matches(path: str | os.PathLike, network, size: int, batch: int = 3) -> float:
    """Lowest cosine between onnxruntime's and torch's embeddings of a fixed random batch; FaceIDError below
    MATCH_COSINE (so a bad export is never written)."""
    import torch

    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0)).clamp_(-1, 1)
    with torch.no_grad():
        ref = network(x).numpy()
    got = OnnxForward(path, threads=1)(x.numpy())
    cos = float((ref * got).sum(axis=1).min())
    if not cos >= MATCH_COSINE:
        raise FaceIDError(
            f"The ONNX export does not reproduce torch's embeddings (lowest cosine {cos:.6f} < "
            f"{MATCH_COSINE}); nothing was written."
        )
    return cos


def default_outputs(source: str) -> tuple[Path, Path]:
    """Where export_model.py writes by default: beside the source, <stem>.onnx and <stem>_inference.pth."""
    src = Path(source)
    return src.with_suffix(".onnx"), src.with_name(f"{src.stem}_inference.pth")


def run_export(
    model: str | None,
    weights: str | None,
    crop: str | None,
    onnx_path: str | None,
    slim_path: str | None,
    opset: int = OPSET,
    download: bool = False,
    slim: bool = True,
    int8_data: str | None = None,
    int8_samples: int = INT8_SAMPLES,
) -> dict:
    """export_model.py: the ONNX file with its detector, (unless `slim` is False) the slim inference checkpoint,
    and with `int8_data` (a folder of face images) the INT8 model beside them (`quantize`)."""
    if int8_data is not None:
        check_int8_data(int8_data)  # before a minute of export, so a wrong folder costs nothing
    checkpoint, source = checkpoint_for_export(model, weights, crop, download=download)
    default_onnx, default_slim = default_outputs(source)
    onnx_out = Path(onnx_path) if onnx_path else default_onnx
    report: dict[str, Any] = {"source": source, "inference_checkpoint": None}
    sources = [sha256_file(source)]
    try:
        if slim:  # first, so that the ONNX file records its hash: either file finds the other
            slim_out = Path(slim_path) if slim_path else default_slim
            save_inference_checkpoint(slim_out, checkpoint)
            sources.append(sha256_file(slim_out))
            report["inference_checkpoint"] = {"path": str(slim_out), "bytes": slim_out.stat().st_size}
        report["onnx"] = export_onnx(checkpoint, onnx_out, opset=opset, sources=sources)
        report["detector"] = export_detector(onnx_out, opset)  # MTCNN beside it: --runtime onnx needs no torch
        report["int8"] = None if int8_data is None else quantize_embedder(onnx_out, int8_data, int8_samples)
    except OSError as err:
        raise FaceIDError(
            f"Cannot write {err.filename or onnx_out}: {err.strerror}; choose another place for it.",
            "onnx",
            "inference_checkpoint",
        ) from None
    return report
