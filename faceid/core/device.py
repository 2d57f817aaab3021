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
    without a usable GPU is an error, never a silent CPU run; so is a GPU index this machine lacks, and a GPU
    that PyTorch lists but cannot run a kernel on (a driver too old for its CUDA, a build without this chip's
    code): `cuda_problem` tries one small allocation and operation first."""
    import torch

    check_device_name(name)
    if name is None or name == "auto":
        device = torch.device(f"cuda:{local_rank}")
        return device if torch.cuda.is_available() and cuda_problem(device) is None else torch.device("cpu")
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
    device = torch.device(f"cuda:{index}")
    problem = cuda_problem(device)
    if problem is not None:
        raise FaceIDError(f"The device {name} cannot be used ({problem}); use the CPU (or auto).", "device")
    return device


_CHECKED: dict[str, str | None] = {}  # device -> the problem found, once per process


def cuda_problem(device: torch.device) -> str | None:
    """None when `device` runs a small kernel, else the first line of the error PyTorch raised (checked once per
    process and device)."""
    import torch

    key = str(device)
    if key not in _CHECKED:
        try:
            (torch.ones(2, device=device) * 2).sum().item()
            _CHECKED[key] = None
        except (RuntimeError, AssertionError) as err:  # torch raises AssertionError where it was built without CUDA
            _CHECKED[key] = (str(err).strip().splitlines() or [type(err).__name__])[0].rstrip(".")
    return _CHECKED[key]


def describe_device(device: torch.device | str) -> str:
    """What a program says it runs on, at start: the GPU's name and index ("NVIDIA H200 (cuda:0)"), or "CPU".
    A plain "cpu" (another runtime's embedder) needs no torch."""
    if str(device).startswith("cuda"):
        import torch

        return f"{torch.cuda.get_device_name(device)} ({device})"
    return "CPU"
