"""Taking the model elsewhere: the ONNX file and the onnxruntime embedder the app can run instead of torch.

The ONNX file holds the whole `model.EmbeddingNetwork` (backbone, mirror-and-sum when the spec says
``flip``, L2 normalisation), so its output is the embedding the gallery stores, with no code around it:

- input ``input``: float32 (batch, 3, size, size), RGB, ``(pixel - 127.5) / 128`` (about -1..1); the
  batch dimension is dynamic. `size` and the crop that produces it are in the metadata.
- output ``embedding``: float32 (batch, 512), L2-normalised: a dot product of two is their cosine.
- metadata (``metadata_props``, JSON values): ``faceid.format``, ``faceid.fingerprint`` (the same
  `backbone_fingerprint` the torch network gets, so a gallery registered on one runtime is used by
  the other), every key of `checkpoint.INFERENCE_KEYS` except the weights: ``faceid.preprocess``
  (the crop the network expects), ``faceid.threshold`` and the calibration; and ``faceid.sources``, the
  sha256 of the checkpoint it was exported from and of the inference checkpoint written with it.

The runtime choice (`choose_runtime`, the app's ``--runtime``): an ``.onnx`` model runs on onnxruntime;
a checkpoint runs on onnxruntime when its export sits beside it (``<stem>.onnx``, written from that very
file: the sha256 must match) and onnxruntime is installed, because that measured faster on CPU
(bench/bench_latency.py --runtimes); otherwise, or with ``--runtime torch``, on torch.

onnx/onnxscript are needed to export, onnxruntime to run; all three are optional: imported here, lazily,
and their absence is one sentence. Without them everything runs on torch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .calibration import Calibration
from .checkpoint import INFERENCE_KEYS, Checkpoint, load_checkpoint
from ..core.errors import FaceIDError
from ..core.fileio import atomic_write_bytes

ONNX_FORMAT = "faceid-onnx-1"
INPUT_NAME, OUTPUT_NAME = "input", "embedding"
META_PREFIX = "faceid."
OPSET = 18
MATCH_COSINE = 0.9999  # onnxruntime's embeddings must agree with torch's at least this well
MAX_ONNX_BYTES = 2 << 30  # protobuf's own limit; read before handing a file to onnxruntime
RUNTIMES = ("torch", "onnx")


def _plain(value: Any) -> Any:
    """JSON fallback for tensors/arrays in calibration data."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in ONNX metadata")


def checkpoint_for_export(
    model: str | os.PathLike | None, weights: str | os.PathLike | None, crop: str | None, download: bool = False
) -> tuple[Checkpoint, str]:
    """(a checkpoint, where it came from): a faceid checkpoint, or
    backbone weights with the spec of `crop` and no calibration (the app's model choice, model.choose_embedder)."""
    from .embedder import choose_embedder

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

    from .embedder import EmbeddingNetwork, backbone_fingerprint, build_backbone, load_backbone_weights
    from .preprocessing import PreprocessSpec

    onnx = _require("onnx", "export to ONNX")
    _require("onnxscript", "export to ONNX")
    spec = PreprocessSpec.from_dict(checkpoint.preprocess)
    backbone = build_backbone()
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
        meta: dict[str, Any] = {"format": ONNX_FORMAT, "fingerprint": backbone_fingerprint(backbone, spec)}
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
    got = OnnxForward(path, threads=1)(x).numpy()
    cos = float((ref * got).sum(axis=1).min())
    if not cos >= MATCH_COSINE:
        raise FaceIDError(
            f"The ONNX export does not reproduce torch's embeddings (lowest cosine {cos:.6f} < "
            f"{MATCH_COSINE}); nothing was written."
        )
    return cos


def _require(module: str, purpose: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise FaceIDError(
            f"{module} is not installed, which is needed to {purpose}; install the versions pinned "
            f"in requirements-dev.txt (pip install -r requirements-dev.txt)."
        ) from None


class OnnxForward:
    """An onnxruntime session as a callable: normalised float32 NCHW tensor -> (N, 512) embeddings tensor."""

    def __init__(self, path: str | os.PathLike, threads: int = 1):
        ort = _require("onnxruntime", "run the embedder on onnxruntime (or use --runtime torch)")
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
                f"{OUTPUT_NAME!r}); write one with export_model.py."
            )
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)

    def __call__(self, x):
        import torch

        out = self.session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x.detach().cpu().numpy(), np.float32)})
        return torch.from_numpy(out[0])


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
        raise FaceIDError(f"{path} was not written by export_model.py (no faceid metadata); export it again.")
    return meta


def load_onnx_embedder(path: str | os.PathLike, threads: int = 1):
    """An Embedder whose network runs on onnxruntime (CPU); spec, threshold and fingerprint from the metadata."""
    import torch

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
        device=torch.device("cpu"),
        forward=forward,
        calibration=table,
    )


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
) -> dict:
    """export_model.py: the ONNX file and (unless `slim` is False) the slim inference checkpoint."""
    from .checkpoint import save_inference_checkpoint
    from ..core.defaults import DEFAULT_CHECKPOINT

    if model and weights:
        raise FaceIDError(
            "Give either a faceid checkpoint or backbone weights (a state_dict), not both.", "model", "weights"
        )
    if not model and not weights and DEFAULT_CHECKPOINT.is_file():
        model = str(DEFAULT_CHECKPOINT)
    from ..core.fileio import sha256_file

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
    except OSError as err:
        raise FaceIDError(
            f"Cannot write {err.filename or onnx_out}: {err.strerror}; choose another place for it.",
            "onnx",
            "inference_checkpoint",
        ) from None
    return report


def exported_beside(checkpoint: str | os.PathLike) -> Path | None:
    """The ONNX file export_model.py wrote beside `checkpoint` (or beside the checkpoint it slimmed), if any."""
    src = Path(checkpoint)
    for candidate in (src.with_suffix(".onnx"), src.with_name(src.stem.removesuffix("_inference") + ".onnx")):
        if candidate.is_file():
            return candidate
    return None


def choose_runtime(
    model: str | os.PathLike | None,
    weights: str | os.PathLike | None,
    crop: str | None,
    device: str | None,
    download: bool,
    runtime: str = "auto",
    threads: int = 1,
):
    """The app's embedder on the chosen runtime, and a note saying which and why (see the module docstring)."""
    from ..core.fileio import sha256_file
    from .embedder import choose_embedder
    from ..core.defaults import DEFAULT_CHECKPOINT

    if runtime not in ("auto", *RUNTIMES):
        raise FaceIDError(f"Unknown runtime {runtime!r}; use torch or onnx.")
    if model and str(model).lower().endswith(".onnx"):
        if runtime == "torch":
            raise FaceIDError(
                f"{model} is an ONNX model: it runs on the onnx runtime; for torch give the checkpoint "
                f"it was exported from.",
                "runtime",
                "model",
            )
        if weights or crop:
            raise FaceIDError("An ONNX model carries its own weights and crop: give neither.", "weights", "crop")
        if device and device != "cpu":
            raise FaceIDError(
                "The ONNX runtime here runs on the CPU: leave the device out, or run the checkpoint on torch.",
                "device",
                "runtime",
            )
        return load_onnx_embedder(model, threads), "runtime onnx (an .onnx model)"
    checkpoint = model or (DEFAULT_CHECKPOINT if not weights and DEFAULT_CHECKPOINT.is_file() else None)
    if runtime == "torch" or (runtime == "auto" and (checkpoint is None or (device or "cpu") != "cpu")):
        return choose_embedder(model, weights, crop, device, download=download), "runtime torch"
    onnx_file = exported_beside(checkpoint) if checkpoint else None
    why = None
    if checkpoint is None:
        why = "--runtime onnx needs an exported model: run export_model.py and pass --model FILE.onnx"
    elif device and device != "cpu":
        why = "--runtime onnx runs on the CPU: drop --device"
    elif onnx_file is None:
        why = (
            f"no ONNX export beside {checkpoint}: run `export_model.py --model {checkpoint}` (writes "
            f"{Path(checkpoint).with_suffix('.onnx')})"
        )
    elif not _has("onnxruntime"):
        why = "onnxruntime is not installed (pip install -r requirements-dev.txt)"
    if why is None:
        assert checkpoint is not None and onnx_file is not None  # either one None has set `why` above
        embedder = load_onnx_embedder(onnx_file, threads)
        forward = embedder.forward
        if sha256_file(checkpoint) in read_metadata(forward, onnx_file).get("sources", []):
            return embedder, f"runtime onnx ({onnx_file}, exported from this checkpoint)"
        why = f"{onnx_file} was not exported from {checkpoint} (out of date?): run export_model.py again"
    if runtime == "onnx":
        raise FaceIDError(why[0].upper() + why[1:] + ".")
    return choose_embedder(model, weights, crop, device, download=download), f"runtime torch ({why})"


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
