"""Which runtime the app's embedder runs on (``--runtime``): torch, or onnxruntime for an exported model.

An ``.onnx`` model runs on onnxruntime. A checkpoint runs on onnxruntime when its export sits beside it
(``<stem>.onnx``, written from that very file: the sha256 must match) and onnxruntime is installed, because
that measured faster on CPU (bench/bench_latency.py --runtimes); otherwise, or with ``--runtime torch``, on torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import FaceIDError
from ..core.report import command
from .onnx_model import load_onnx_embedder, read_metadata
from .options import default_model

if TYPE_CHECKING:
    from .embedder import Embedder

RUNTIMES = ("torch", "onnx")


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
) -> tuple[Embedder, str]:
    """The app's embedder on the chosen runtime, and a note saying which and why (see the module docstring)."""
    from ..core.fileio import sha256_file
    from .embedder import choose_embedder

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
    checkpoint = default_model(model, weights, crop)
    if runtime == "torch" or (runtime == "auto" and (checkpoint is None or (device or "cpu") != "cpu")):
        return choose_embedder(model, weights, crop, device, download=download), "runtime torch"
    onnx_file = exported_beside(checkpoint) if checkpoint else None
    why = None
    if checkpoint is None:
        why = f"--runtime onnx needs an exported model: run {command('export_model.py')} and pass --model FILE.onnx"
    elif device and device != "cpu":
        why = "--runtime onnx runs on the CPU: drop --device"
    elif onnx_file is None:
        why = (
            f"no ONNX export beside {checkpoint}: run `{command('export_model.py')} --model {checkpoint}` (writes "
            f"{Path(checkpoint).with_suffix('.onnx')})"
        )
    elif not _has("onnxruntime"):
        why = "onnxruntime is not installed (pip install -r requirements.txt)"
    if why is None:
        assert checkpoint is not None and onnx_file is not None  # either one None has set `why` above
        embedder = load_onnx_embedder(onnx_file, threads)
        forward = embedder.forward
        if sha256_file(checkpoint) in read_metadata(forward, onnx_file).get("sources", []):
            return embedder, f"runtime onnx ({onnx_file}, exported from this checkpoint)"
        why = f"{onnx_file} was not exported from {checkpoint} (out of date?): run {command('export_model.py')} again"
    if runtime == "onnx":
        raise FaceIDError(why[0].upper() + why[1:] + ".")
    return choose_embedder(model, weights, crop, device, download=download), f"runtime torch ({why})"


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
