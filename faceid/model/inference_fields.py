"""The fields a model file carries beside its weights, checked (torch-free: an ONNX file's metadata gets the same).

A checkpoint (`checkpoint.INFERENCE_KEYS`) and an ONNX export's ``faceid.*`` metadata hold the same fields: the
network's name, the preprocessing spec, a threshold and its summary, the calibration table and the validation
record. A file that loads safely can still lie: ``threshold: -5`` would make every face MATCH (reported as
calibrated), ``size: 0`` would crash deep inside the network, ``size: 100000`` would allocate 120 GB. Every field
goes through `faceid.core.validate`; the first bad one is one sentence naming it.

A model's own threshold is a cosine above 0: at or below it, about half of all strangers would be accepted
(different people's faces score around a positive mean: `Calibration.check_plausible`).
"""

from __future__ import annotations

from typing import Any

from ..core.errors import FaceIDError
from ..core.validate import Fields, check_depth, shown

NETWORK_NAMES = ("inception_resnet_v1",)  # the registry's names (`network.NETWORKS` builds each; a test pins both)
DEFAULT_NETWORK = "inception_resnet_v1"
MIN_INPUT_SIZE, MAX_INPUT_SIZE = 32, 1024  # network input side: InceptionResnetV1 needs >= ~32 px to pool
THRESHOLD_FLOOR = 1e-6  # a model's own threshold must be a cosine above 0


def _label(where: str, kind: str = "checkpoint") -> str:
    """ "Checkpoint x.pth" / "ONNX model x.onnx" / "The checkpoint": how a sentence names the file."""
    return where[0].upper() + where[1:] if where.startswith("the ") else f"{kind[0].upper()}{kind[1:]} {where}"


def field_error(where: str, field: str, value: Any, expected: str, kind: str = "checkpoint") -> FaceIDError:
    return FaceIDError(f"{_label(where, kind)}: field {field!r} is {shown(value)}; expected {expected}.")


def check_fields(data: dict[str, Any], where: str, kind: str = "checkpoint") -> None:
    """Every field but the weights, in one sentence naming the first bad one (module docstring); `kind`: what
    the file is called in it ("checkpoint", "ONNX model")."""
    from .preprocessing import CROP_STYLES

    check_depth({k: v for k, v in data.items() if k != "model"}, _label(where, kind))
    f = Fields(data, _label(where, kind))
    f.choice("network", NETWORK_NAMES, default=DEFAULT_NETWORK)
    pre = f.sub("preprocess")
    pre.choice("crop", CROP_STYLES)
    size = pre.whole("size", MIN_INPUT_SIZE, MAX_INPUT_SIZE, default=160)
    pre.whole("margin", 0, size // 2 - 1, default=0)
    pre.flag("flip", default=True)
    pre.choice("normalize", ("fixed_image_standardization",), default="fixed_image_standardization")
    if f.has("threshold"):
        f.real("threshold", THRESHOLD_FLOOR, 1.0, expected="a cosine similarity above 0 and at most 1 (or none)")
    if f.has("threshold_info"):
        info = f.sub("threshold_info")
        for key in ("threshold", "tar"):
            if info.has(key):
                info.cosine(key)
        if info.has("target_far"):
            info.real("target_far", 0.0, 1.0, what="a rate")
    if data.get("calibration") is not None:
        from .calibration import Calibration

        Calibration.from_dict(data["calibration"], where=f"{kind} {where}")
    if data.get("validation") is not None:
        from .validation_record import read_record

        read_record(data["validation"], f"{kind} {where}")
