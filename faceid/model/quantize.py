"""INT8 embedders (export_model.py --int8): onnxruntime's static quantisation of the exported fp32 embedder,
its activation ranges measured on face crops from a folder the user names (training data, never benchmark data).

What is written: ``<stem>.int8.onnx`` beside the fp32 ``<stem>.onnx`` (QDQ format: int8 weights per output
channel, uint8 activations, MinMax ranges), with the same input, output and preprocessing as the fp32 file, and
copies of the fp32 file's detector stages under its own name (``<stem>.int8.pnet.onnx``, ...), so it runs without
torch like the fp32 file. Its embeddings are not the fp32 model's, so it gets a fingerprint of its own
(`onnx_graph.fingerprint`, of its own graph and weights, computed again when it is loaded): a gallery registered on one is not silently used by the other, and the fp32 file's threshold
table does not carry over. Measure one for it with ``evaluate_model.py --calibrate HELD_OUT_PEOPLE --model
<stem>.int8.onnx`` and pass the table with ``--calibration``.

The crops: every image file under the folder (sorted; `count` spread evenly over them), through the decode gate;
an image already the size of the aligned crop (112 x 112, as preprocess_dataset.py unpacks CASIA-WebFace) is used
as it is for an ``aligned5`` model, any other goes through the exported detector and the model's crop.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..core.decode import IMAGE_EXTENSIONS, DecodeError, read_image_file
from ..core.errors import FaceIDError
from ..core.fileio import atomic_write_bytes
from ..core.report import note, progress
from .benchmark import benchmark_reason
from .mtcnn_onnx import detector_files
from .onnx_graph import fingerprint as graph_fingerprint
from .onnx_model import INPUT_NAME, META_PREFIX, OnnxForward, read_metadata, require_module
from .preprocessing import PreprocessSpec, crop_face, to_network_array

INT8_SAMPLES = 300  # calibration crops by default: the ranges settle well before (measured in bench/README.md)
MIN_CROPS = 32  # fewer face crops than this measure no ranges worth trusting
MIN_MEDIAN_COSINE = 0.95  # INT8 vs fp32 on the calibration crops: below this the quantisation broke the model


def int8_path(fp32_onnx: str | os.PathLike) -> Path:
    """Where --int8 writes: ``X.onnx`` -> ``X.int8.onnx``."""
    path = Path(fp32_onnx)
    return path.with_name(f"{path.stem}.int8.onnx")


def check_int8_data(folder: str | os.PathLike) -> Path:
    """The calibration folder, if it is one and not benchmark data (checked before the export spends a minute)."""
    root = Path(folder)
    if not root.is_dir():
        raise FaceIDError(f"The INT8 calibration folder {root} does not exist or is not a folder.", "int8_data")
    reason = benchmark_reason(root)
    if reason:
        raise FaceIDError(
            f"Refusing to calibrate INT8 ranges on {root}: {reason}, and benchmark data must stay test data; use "
            f"training images or a folder of your own.",
            "int8_data",
        )
    return root


def calibration_crops(folder: str | os.PathLike, spec: PreprocessSpec, fp32_onnx: Path, count: int) -> list[np.ndarray]:
    """`count` face crops from the image files under `folder` (see the module docstring); benchmark data refused."""
    root = check_int8_data(folder)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise FaceIDError(f"No image files under {root} to calibrate the INT8 model on.", "int8_data")
    picked = [files[int(i)] for i in np.unique(np.linspace(0, len(files) - 1, min(count, len(files))).astype(int))]
    detector = None
    crops, skipped = [], 0
    for path in progress(picked, desc="INT8 calibration crops", unit="image"):
        try:
            image = read_image_file(path)
        except (DecodeError, FaceIDError):
            skipped += 1
            continue
        if spec.crop == "aligned5" and image.shape[:2] == (spec.crop_size, spec.crop_size):
            crops.append(image)
            continue
        if detector is None:
            from .face import FaceDetector

            detector = FaceDetector(onnx_stages=fp32_onnx)
        faces = detector.detect(image)
        if not faces:
            skipped += 1
            continue
        crops.append(crop_face(image, faces[0].box, faces[0].landmarks, spec))
    if skipped:
        note(f"INT8 calibration: {skipped} of {len(picked)} images skipped (unreadable or no face)")
    if len(crops) < MIN_CROPS:
        raise FaceIDError(
            f"Only {len(crops)} face crops under {root}; the INT8 ranges need at least {MIN_CROPS}.", "int8_data"
        )
    return crops


class _Crops:
    """onnxruntime's CalibrationDataReader over the crops, a batch at a time."""

    def __init__(self, crops: list[np.ndarray], spec: PreprocessSpec, batch: int = 16):
        self.batches = iter([to_network_array(crops[i : i + batch], spec) for i in range(0, len(crops), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self.batches, None)
        return None if x is None else {INPUT_NAME: x}

    def rewind(self) -> None:  # onnxruntime's interface; the ranges are measured in one pass
        pass


def quantize_embedder(
    fp32_onnx: str | os.PathLike, data: str | os.PathLike, count: int = INT8_SAMPLES
) -> dict[str, Any]:
    """Write the INT8 model (and its detector copies) beside `fp32_onnx`; returns what was written."""
    onnx = require_module("onnx", "write an INT8 model")
    quantization = require_module("onnxruntime.quantization", "write an INT8 model")
    fp32 = Path(fp32_onnx)
    meta = read_metadata(OnnxForward(fp32), fp32)
    spec = PreprocessSpec.from_dict(meta["preprocess"])
    crops = calibration_crops(data, spec, fp32, count)
    out = int8_path(fp32)
    tmp = out.with_name(f".{out.name}.quantize-{os.getpid()}")
    quiet = logging.getLogger()  # onnxruntime's quantiser advises on the root logger; the report says what matters
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        quantization.quantize_static(
            str(fp32),
            str(tmp),
            _Crops(crops, spec),
            quant_format=quantization.QuantFormat.QDQ,
            per_channel=True,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            calibrate_method=quantization.CalibrationMethod.MinMax,
        )
        proto = onnx.load(str(tmp))
    finally:
        quiet.setLevel(level)
        tmp.unlink(missing_ok=True)
        for leftover in out.parent.glob(f".{out.name}.quantize-{os.getpid()}*"):
            leftover.unlink(missing_ok=True)
    del proto.metadata_props[:]
    fingerprint = graph_fingerprint(proto, spec.to_dict())  # of its own graph and weights, as every ONNX file
    int8_meta = {k: v for k, v in meta.items() if k not in ("threshold", "threshold_info", "calibration")}
    int8_meta["fingerprint"] = fingerprint
    int8_meta["quantization"] = {
        "kind": "onnxruntime static, QDQ, int8 weights per channel, uint8 activations, MinMax",
        "calibration_crops": len(crops),
        "calibration_folder": str(Path(data).resolve()),
        "fp32_fingerprint": meta["fingerprint"],
    }
    for key, value in int8_meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_PREFIX + key, json.dumps(value)
    data_bytes = proto.SerializeToString()
    atomic_write_bytes(out, data_bytes)
    cosines = _agreement(fp32, out, crops[:64], spec)
    if not np.median(cosines) >= MIN_MEDIAN_COSINE:
        out.unlink(missing_ok=True)
        raise FaceIDError(
            f"The INT8 model's embeddings stray from fp32's (median cosine {np.median(cosines):.3f} < "
            f"{MIN_MEDIAN_COSINE}); nothing was kept."
        )
    for stage, source in detector_files(fp32).items():
        atomic_write_bytes(detector_files(out)[stage], source.read_bytes())
    return {
        "path": str(out),
        "bytes": len(data_bytes),
        "fingerprint": fingerprint,
        "calibration_crops": len(crops),
        "cosine_vs_fp32": {"min": float(np.min(cosines)), "median": float(np.median(cosines))},
    }


def _agreement(fp32: Path, int8: Path, crops: list[np.ndarray], spec: PreprocessSpec) -> np.ndarray:
    """Cosine between the two models' embeddings of each crop."""
    x = to_network_array(crops, spec)
    return (OnnxForward(fp32)(x) * OnnxForward(int8)(x)).sum(axis=1)
