"""The model-selection options, declared once for the app, the evaluator and the exporter, and the rule that turns
them into a model file.

The rule (`default_model`): ``--model FILE`` (a faceid checkpoint), else ``--weights FILE`` (a backbone
state_dict), else ./checkpoints/best_face_model.pth when it exists, else the VGGFace2 weights
($FACEID_WEIGHTS, torch's cache, or a download where the command allows one). A checkpoint carries its own crop,
threshold and calibration table; backbone weights get the crop of ``--crop`` and, for decisions, the table of
``--calibration``.

Each command declares the options it has with `add_model_options`; every option's flag, help and default is
written here once (a command chooses which ones and, for ``--threads``, its default).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Callable

from ..core.defaults import DEFAULT_CHECKPOINT
from ..core.device import check_device_name
from ..core.errors import FaceIDError, positive_int
from ..core.fileio import require_regular_file

CROP_CHOICES = ("box", "aligned5")
THREADS_HELP = {
    1: "CPU threads for torch (default: 1 - per-frame work is small, and extra threads slow it down badly on a "
    "shared CPU)",
    None: "CPU threads for torch (default: torch's choice; 1 is faster on a busy shared CPU)",
}


def default_model(
    model: str | os.PathLike | None, weights: str | os.PathLike | None, crop: str | None = None
) -> str | os.PathLike | None:
    """The checkpoint the options select (None: backbone weights). Both a checkpoint and weights, or a crop
    with a checkpoint, is one sentence."""
    if model and weights:
        raise FaceIDError(
            "Give either a faceid checkpoint or backbone weights (a state_dict), not both.", "model", "weights"
        )
    if model and crop:
        raise FaceIDError("A crop style applies to backbone weights only: a checkpoint carries its own crop.", "crop")
    if not model and not weights and DEFAULT_CHECKPOINT.is_file():
        return DEFAULT_CHECKPOINT
    return model or None


def add_model_options(
    group: argparse._ActionsContainer,
    names: tuple[str, ...],
    *,
    onnx: bool = False,
    threads: int | None = 1,
    default: Callable[[Any], Any] = lambda value: value,
) -> None:
    """Declare the options in `names` (model, weights, crop, offline or download, device, runtime, threads,
    calibration) on `group`. `onnx`: --model may be an .onnx export; `threads`: the --threads default (1 or
    None); `default` wraps every default (the app's subcommands pass argparse.SUPPRESS, see app/cli.py)."""
    download = "a download of it" + (
        " with --download" if "download" in names else " unless --offline" if "offline" in names else ""
    )
    declared: dict[str, dict[str, Any]] = {
        "model": dict(
            help=f"faceid checkpoint{', or its ONNX export (export_model.py)' if onnx else ''} (default: "
            f"{DEFAULT_CHECKPOINT} if it exists, else backbone weights)",
        ),
        "weights": dict(
            help=f"backbone weights file (a state_dict) instead of a checkpoint (default: $FACEID_WEIGHTS, else the "
            f"VGGFace2 file in torch's cache, else {download})",
        ),
        "crop": dict(
            choices=CROP_CHOICES,
            help="crop style for --weights: box (VGGFace2's MTCNN box crop) or aligned5 (five-point alignment, the "
            "insightface layout); a checkpoint carries its own (default: box)",
        ),
        "offline": dict(action="store_true", default=False, help="never download weights (default: off)"),
        "download": dict(
            action="store_true", default=False, help="allow downloading the VGGFace2 weights (default: off)"
        ),
        "device": dict(help="auto, cpu, cuda, cuda:1 ... (default: auto = the GPU if CUDA works, else the CPU)"),
        "runtime": dict(
            choices=("auto", "torch", "onnx"),
            default="auto",
            help="run the embedder on torch or onnxruntime (default: auto = onnxruntime for an .onnx --model, "
            "or for a checkpoint with its export_model.py export beside it when onnxruntime is installed "
            "(faster on CPU, see docs/export.md); torch otherwise)",
        ),
        "threads": dict(type=positive_int, default=threads, help=THREADS_HELP[threads]),
        "calibration": dict(
            help="calibration table for --weights, written by `evaluate_model.py --calibrate` (default: the "
            "checkpoint's table, if any)",
        ),
    }
    for name in names:
        spec = dict(declared[name])
        spec["default"] = default(spec.get("default"))
        group.add_argument("--" + name, **spec)


MODEL_FILES = {"model": "The model file", "weights": "The weights file", "calibration": "The calibration file"}


def check_model_options(args: argparse.Namespace) -> None:
    """Checks argparse cannot make, run before anything is loaded: the device name (a GPU is looked for only
    when the model loads), and that each model file given is a regular file (a named pipe would block the load
    forever; a missing file is named before the gallery or the source is touched)."""
    check_device_name(getattr(args, "device", None))
    for setting, what in MODEL_FILES.items():
        value = getattr(args, setting, None)
        if value:
            require_regular_file(Path(value).expanduser(), what, setting)
