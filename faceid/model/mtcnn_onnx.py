"""MTCNN's three networks as ONNX files beside the exported embedder, and the detector that runs them on
onnxruntime with the numpy steps of `mtcnn_steps`: the app's ``--runtime onnx`` imports neither torch nor
facenet-pytorch.

Files: for an embedder ``X.onnx``, export_model.py writes ``X.pnet.onnx``, ``X.rnet.onnx`` and ``X.onet.onnx``
(facenet-pytorch's weights, which ship in its wheel: 2 MB together). Each has one input ``input`` (float32 NCHW,
normalised ``(pixel - 127.5) * 0.0078125``; P-net any size >= 12 px, R-net 24 px, O-net 48 px; dynamic batch)
and the outputs of `STAGES`, and carries ``faceid.format`` = `DETECTOR_FORMAT` and ``faceid.stage`` in its
metadata. Before a file is written, onnxruntime's outputs are compared with torch's on real-valued input.
Three files rather than one bundle: each stage is a graph of its own with its own input size, and a detector
file is the same for every embedder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import FaceIDError
from ..core.fileio import atomic_write_bytes
from ..core.report import command
from .mtcnn_steps import PYRAMID_FACTOR, detect_faces
from .onnx_model import MAX_ONNX_BYTES, META_PREFIX, require_module

DETECTOR_FORMAT = "faceid-mtcnn-1"
DETECTOR_INPUT = "input"
# stage -> (its outputs in order, its input side (None: any), its facenet-pytorch class)
STAGES: dict[str, tuple[tuple[str, ...], int | None, str]] = {
    "pnet": (("offsets", "prob"), None, "PNet"),
    "rnet": (("offsets", "prob"), 24, "RNet"),
    "onet": (("offsets", "landmarks", "prob"), 48, "ONet"),
}
EXPORT_TOLERANCE = 1e-4  # largest |onnxruntime - torch| allowed on any output before a stage is written


def detector_files(embedder_onnx: str | os.PathLike) -> dict[str, Path]:
    """Where the three stages of the embedder file `embedder_onnx` are (``X.onnx`` -> ``X.pnet.onnx``, ...)."""
    path = Path(embedder_onnx)
    return {stage: path.with_name(f"{path.stem}.{stage}.onnx") for stage in STAGES}


def has_detector(embedder_onnx: str | os.PathLike) -> bool:
    """Whether all three stage files lie beside the embedder (an export from before they existed has none)."""
    return all(p.is_file() for p in detector_files(embedder_onnx).values())


class _StageSession:
    """One stage's onnxruntime session, checked to be that stage of a faceid export before it is used."""

    def __init__(self, stage: str, path: Path, threads: int):
        ort = require_module("onnxruntime", "run the face detector on onnxruntime")
        outputs, side, _ = STAGES[stage]
        try:
            size = path.stat().st_size
        except OSError as err:
            raise FaceIDError(f"Cannot read the detector file {path}: {err.strerror}.") from None
        if size > MAX_ONNX_BYTES:
            raise FaceIDError(f"{path} is {size / 2**30:.1f} GiB, far larger than an MTCNN stage; refusing it.")
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own exception types for every kind of bad file
            raise FaceIDError(f"{path} is not a usable ONNX file ({str(err).splitlines()[0][:150]}).") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        names_ok = [i.name for i in self.session.get_inputs()] == [DETECTOR_INPUT] and tuple(
            o.name for o in self.session.get_outputs()
        ) == outputs
        if (
            not names_ok
            or meta.get(META_PREFIX + "format") != json.dumps(DETECTOR_FORMAT)
            or meta.get(META_PREFIX + "stage") != json.dumps(stage)
        ):
            raise FaceIDError(
                f"{path} is not the {stage} stage of a faceid detector; write it again with {command('export_model.py')}."
            )
        self.outputs, self.side = list(outputs), side

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        if self.side is not None and len(x) == 0:
            return [
                np.zeros((0, 4 if name == "offsets" else 10 if name == "landmarks" else 2), np.float32)
                for name in self.outputs
            ]
        return self.session.run(self.outputs, {DETECTOR_INPUT: np.ascontiguousarray(x, np.float32)})


class OnnxMTCNN:
    """facenet-pytorch's MTCNN (keep_all, select_largest) on onnxruntime: the same `detect(images,
    landmarks=True)` answer, for `face.FaceDetector`. The sessions open here, once."""

    def __init__(
        self,
        embedder_onnx: str | os.PathLike,
        min_face_size: float,
        thresholds: tuple[float, float, float],
        threads: int = 1,
        factor: float = PYRAMID_FACTOR,
    ):
        files = detector_files(embedder_onnx)
        missing = [str(p) for p in files.values() if not p.is_file()]
        if missing:
            raise FaceIDError(
                f"The face detector's files are missing beside {embedder_onnx} ({', '.join(missing)}); export "
                f"again with {command('export_model.py')}."
            )
        self.stages = {stage: _StageSession(stage, path, threads) for stage, path in files.items()}
        self.min_face_size, self.thresholds, self.factor = min_face_size, tuple(thresholds), factor

    def detect(self, images: np.ndarray, landmarks: bool = True) -> tuple[list, list, list]:
        """images (N, H, W, 3) RGB uint8 -> per image: boxes (n, 4) or None, probabilities, landmarks (n, 5, 2)
        or None; largest box first, as facenet-pytorch's MTCNN answers."""
        found = detect_faces(
            np.asarray(images),
            self.stages["pnet"],
            self.stages["rnet"],
            self.stages["onet"],
            self.min_face_size,
            self.thresholds,
            self.factor,
        )
        boxes: list[np.ndarray | None] = []
        probs: list[Any] = []
        points: list[np.ndarray | None] = []
        for b, p in found:
            if not len(b):
                boxes.append(None)
                probs.append([None])
                points.append(None)
                continue
            order = np.argsort((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[::-1]
            boxes.append(b[order, :4])
            probs.append(b[order, 4])
            points.append(p[order])
        return boxes, probs, points


# ---------------------------------------------------------------------------------------------- export (torch)
def export_detector(embedder_onnx: str | os.PathLike, opset: int) -> dict[str, Any]:
    """Write the three stages beside `embedder_onnx`, each checked against torch first; returns what was written."""
    import torch
    from facenet_pytorch.models import mtcnn as facenet_mtcnn

    require_module("onnx", "export the face detector to ONNX")
    written: dict[str, Any] = {}
    gen = torch.Generator().manual_seed(0)
    for stage, path in detector_files(embedder_onnx).items():
        outputs, side, cls = STAGES[stage]
        net = getattr(facenet_mtcnn, cls)().eval()
        edge = side or 64
        example = torch.rand(2, 3, edge, edge + (0 if side else 16), generator=gen) * 2 - 1
        dims: dict[int, Any] = {0: torch.export.Dim("batch", min=1, max=1 << 20)}
        if side is None:
            dims.update(
                {2: torch.export.Dim("height", min=12, max=1 << 15), 3: torch.export.Dim("width", min=12, max=1 << 15)}
            )
        with torch.no_grad():
            program = torch.onnx.export(
                net,
                (example,),
                input_names=[DETECTOR_INPUT],
                output_names=list(outputs),
                dynamic_shapes=(dims,),
                opset_version=opset,
                dynamo=True,
                verbose=False,
            )
        assert program is not None  # torch.onnx.export returns the ONNXProgram when dynamo=True
        proto = program.model_proto
        for key, value in (("format", DETECTOR_FORMAT), ("stage", stage), ("weights", "facenet-pytorch MTCNN")):
            entry = proto.metadata_props.add()
            entry.key, entry.value = META_PREFIX + key, json.dumps(value)
        data = proto.SerializeToString()
        error = _check_stage(data, net, outputs, side)
        atomic_write_bytes(path, data)
        written[stage] = {"path": str(path), "bytes": len(data), "max_abs_error_vs_torch": error}
    return written


def _check_stage(data: bytes, net, outputs: tuple[str, ...], side: int | None) -> float:
    """Largest |onnxruntime - torch| over the outputs on two batches of other sizes than the export's example;
    FaceIDError above EXPORT_TOLERANCE (so a wrong stage is never written)."""
    import torch

    ort = require_module("onnxruntime", "check the exported face detector")
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(1)
    worst = 0.0
    for shape in ((1, 3, side or 12, side or 12), (5, 3, side or 45, side or 97)):
        x = torch.rand(*shape, generator=gen) * 2 - 1
        with torch.no_grad():
            ref = [t.numpy() for t in net(x)]
        got = session.run(list(outputs), {DETECTOR_INPUT: x.numpy()})
        worst = max([worst] + [float(np.abs(a - b).max()) for a, b in zip(ref, got)])
    if not worst <= EXPORT_TOLERANCE:
        raise FaceIDError(
            f"The ONNX face detector does not reproduce torch's outputs (error {worst:.2e} > {EXPORT_TOLERANCE}); "
            f"nothing was written."
        )
    return worst
