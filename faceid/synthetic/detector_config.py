"""Every setting of a detector run (train_detector.py), declared once: flag, help, default and check follow."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.defaults import RUN_DIR
from ..model.preprocessing import CROP_STYLES
from ..train.recipe import OPTIMIZERS, PRECISIONS
from .settings import option, positive, to_dict


@dataclass(frozen=True)
class DetectorConfig:
    real: str = option(
        "./datasets/casia-webface-images",
        "real faces: a folder tree <root>/<identity>/<image>.jpg, a .rec, or a directory containing train.rec "
        "(the recogniser's data)",
    )
    synthetic: list[str] = field(
        default_factory=list,
        metadata={
            "help": "a folder of synthetic faces: generate_faces.py's output (its manifest.json), images, or one "
            "subfolder per source; give it again for more folders",
            "choices": None,
            "valid": None,
            "shown": "none: required",
        },
    )
    out: str = option(f"./{RUN_DIR}/detector", "output folder: checkpoints, history.json, curves, train.log")
    weights: str | None = option(
        None,
        "initial backbone weights: InceptionResnetV1 weights or a faceid checkpoint",
        shown="$FACEID_WEIGHTS, else VGGFace2 (cached or downloaded), else --from-scratch",
    )
    from_scratch: bool = option(False, "start from random weights")
    freeze_backbone: bool = option(
        False, "train the head alone on the backbone's fixed features (a linear probe: fast, weaker)"
    )
    crop_style: str = option("aligned5", "crop layout of the real folder tree and of the app's crop", CROP_STYLES)
    input_size: int = option(
        160,
        "network input side in pixels (InceptionResnetV1 needs 75 or more)",
        valid=(lambda v: 75 <= v <= 1024, "75 to 1024"),
    )
    epochs: int = option(5, "epochs to train (in all, counting those before a resume)", valid=(positive, "> 0"))
    batch_size: int = option(32, "faces per step", valid=(positive, "> 0"))
    lr: float = option(1e-4, "learning rate", valid=(positive, "> 0"))
    optimizer: str = option("adamw", "optimizer", OPTIMIZERS)
    weight_decay: float | None = option(None, "weight decay", shown="0.01 for adamw, 0 for adam, 5e-4 for sgd")
    momentum: float = option(0.9, "SGD momentum")
    val_fraction: float = option(
        0.2,
        "share of the real identities and of the synthetic sources held out for validation (never trained on)",
        valid=(lambda v: 0 < v < 1, "in (0, 1)"),
    )
    frr: float = option(
        0.01,
        "false-reject rate the threshold is set at: the share of held-out REAL faces it may flag as synthetic",
        valid=(lambda v: 0 < v < 1, "in (0, 1)"),
    )
    degrade_real: float = option(
        0.5,
        "share of real training faces shrunk to 64 px and enlarged back, so that resolution alone cannot tell "
        "generated faces apart",
        valid=(lambda v: 0 <= v <= 1, "in [0, 1]"),
    )
    augment_flip: bool = option(True, "mirror each training face with probability 1/2")
    min_images: int = option(2, "skip real identities with fewer images", valid=(lambda v: v >= 2, ">= 2"))
    max_images: int | None = option(None, "at most this many images per real identity", shown="all")
    max_synthetic: int | None = option(None, "at most this many synthetic images per folder", shown="all")
    seed: int = option(42, "seed of the split, the head, the data order and the flips")
    limit_steps: int | None = option(
        None, "stop each epoch after this many steps (smoke tests)", shown="the whole epoch"
    )
    time_limit: float | None = option(None, "stop training after this many minutes (then validate)", shown="none")
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    precision: str = option("auto", "autocast: bf16 on Ampere+ GPUs, fp16 + scaler below, fp32 on CPU", PRECISIONS)
    channels_last: bool | None = option(None, "channels_last memory format", shown="on for CUDA")
    workers: int | None = option(None, "DataLoader workers", shown="as the trainer: by CPUs and decode")

    def to_dict(self) -> dict:
        return to_dict(self)
