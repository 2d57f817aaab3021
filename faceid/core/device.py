"""Which torch device a command runs on: one rule for the app, the evaluator and the trainer.

torch is imported only when a device is resolved, so a command can check the name (`check_device_name`)
at start-up without paying for torch (the app's `list` never imports it).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .errors import FaceIDError

if TYPE_CHECKING:
    import torch

_DEVICE_NAME = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


def check_device_name(name: str | None) -> None:
    """None or a name `resolve_device` knows (auto, cpu, cuda, cuda:N); anything else is one sentence."""
    if name is not None and not _DEVICE_NAME.fullmatch(name):
        raise FaceIDError(f"Unknown device {name!r}; use auto, cpu, cuda or cuda:N.", "device")


def resolve_device(name: str | None = "auto", local_rank: int = 0) -> torch.device:
    """auto (or None): this rank's GPU (cuda:LOCAL_RANK) when CUDA works, else the CPU. cuda or cuda:N
    without a usable GPU is an error, never a silent CPU run; so is a GPU index this machine lacks."""
    import torch

    check_device_name(name)
    if name is None or name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise FaceIDError(
            f"The device {name} needs a CUDA GPU, and PyTorch finds none on this machine; use the CPU (or auto).",
            "device",
        )
    count = torch.cuda.device_count()
    requested = torch.device(name).index
    index = local_rank if requested is None else requested
    if index >= count:
        raise FaceIDError(
            f"GPU {index} does not exist here (this machine has {count}: cuda:0 to cuda:{count - 1}).", "device"
        )
    return torch.device(f"cuda:{index}")
