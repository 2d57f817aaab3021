"""The GAN checkpoint: one flat dict of plain types and tensors (``torch.load(weights_only=True)`` opens it, so no
code runs on load), written atomically (`core.fileio`), with every field checked when it is read.

Fields: ``format`` ("faceid-gan"), ``version``, ``kind`` ("last": written every epoch and on Ctrl-C, "final"),
``config`` (`GanConfig` as a dict), ``generator`` and ``discriminator`` (state_dicts), ``opt_g`` / ``opt_d``
(Adam states), ``epoch`` (completed), ``step`` (steps so far), ``step_in_epoch`` (non-zero only after an
interruption), ``progress`` (the current epoch's loss sums so far), ``rng`` (`faceid.train.rng`), ``history``
(one record per epoch) and ``curve`` (losses every few steps, for the plot). generate_faces.py needs only
``config`` and ``generator``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch

from ..core.errors import FaceIDError
from ..core.fileio import atomic_torch_save
from .gan_config import GanConfig
from .settings import build

GAN_FORMAT, GAN_VERSION = "faceid-gan", 1
GAN_LAST, GAN_FINAL = "gan_last.pth", "gan_final.pth"


@dataclass(frozen=True)
class GanCheckpoint:
    kind: str
    config: GanConfig
    generator: dict[str, torch.Tensor]
    discriminator: dict[str, torch.Tensor]
    opt_g: dict
    opt_d: dict
    epoch: int
    step: int
    step_in_epoch: int
    progress: dict
    rng: dict
    history: list
    curve: list

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": GAN_FORMAT, "version": GAN_VERSION}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, GanConfig) else value
        return out


def save_gan_checkpoint(path: str | os.PathLike, ckpt: GanCheckpoint) -> None:
    try:
        atomic_torch_save(path, ckpt.to_dict())
    except OSError as err:
        raise FaceIDError(f"Cannot write the GAN checkpoint {path}: {err.strerror or err}.") from None


def _state_dict(raw: dict, name: str, where: str) -> dict[str, torch.Tensor]:
    value = raw.get(name)
    if not isinstance(value, dict) or not value or not all(isinstance(v, torch.Tensor) for v in value.values()):
        raise FaceIDError(f"{where}: field {name!r} is not a state_dict of tensors.")
    bad = [k for k, v in value.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise FaceIDError(f"{where}: field {name!r} holds non-finite weights ({bad[0]}).")
    return value


def load_gan_checkpoint(path: str | os.PathLike) -> GanCheckpoint:
    """Open a GAN checkpoint safely; a missing, corrupt, foreign or inconsistent file is one sentence."""
    path = Path(path)
    where = f"GAN checkpoint {path}"
    if not path.is_file():
        raise FaceIDError(f"GAN checkpoint not found: {path}.")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # zip, unpickling, EOF errors: all mean "not a usable checkpoint"
        raise FaceIDError(
            f"Cannot read {where} ({type(err).__name__}); it is corrupt or not a GAN checkpoint."
        ) from None
    if not isinstance(raw, dict) or raw.get("format") != GAN_FORMAT:
        raise FaceIDError(f"{path} is not a GAN checkpoint written by train_gan.py.")
    if raw.get("version") != GAN_VERSION:
        raise FaceIDError(f"{where} has version {raw.get('version')!r}; this program reads version {GAN_VERSION}.")
    if not isinstance(raw.get("config"), dict):
        raise FaceIDError(f"{where}: field 'config' is not a dict.")
    config = build(GanConfig, dict(raw["config"]), where)
    for name in ("epoch", "step", "step_in_epoch"):
        value = raw.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise FaceIDError(f"{where}: field {name!r} is {value!r}, not a whole number >= 0.")
    for name, kind in (
        ("opt_g", dict),
        ("opt_d", dict),
        ("progress", dict),
        ("rng", dict),
        ("history", list),
        ("curve", list),
    ):
        if not isinstance(raw.get(name), kind):
            raise FaceIDError(f"{where}: field {name!r} is not a {kind.__name__}.")
    if raw.get("kind") not in ("last", "final"):
        raise FaceIDError(f"{where}: field 'kind' is {raw.get('kind')!r}, not last or final.")
    return GanCheckpoint(
        kind=raw["kind"],
        config=config,
        generator=_state_dict(raw, "generator", where),
        discriminator=_state_dict(raw, "discriminator", where),
        opt_g=raw["opt_g"],
        opt_d=raw["opt_d"],
        epoch=raw["epoch"],
        step=raw["step"],
        step_in_epoch=raw["step_in_epoch"],
        progress=raw["progress"],
        rng=raw["rng"],
        history=raw["history"],
        curve=raw["curve"],
    )
