"""Every setting of a GAN run (train_gan.py), declared once: its flag, help, default and check follow from it."""

from __future__ import annotations

from dataclasses import dataclass

from ..core.defaults import RUN_DIR
from ..model.preprocessing import CROP_STYLES
from .gan import GAN_SIDES
from .settings import option, positive, to_dict

GAN_PRECISIONS = ("auto", "bf16", "fp32")


@dataclass(frozen=True)
class GanConfig:
    data: str = option(
        "./datasets/casia-webface-images",
        "face images: a folder tree <root>/<identity>/<image>.jpg, a .rec file, or a directory containing "
        "train.rec (the recogniser's data)",
    )
    out: str = option(f"./{RUN_DIR}/gan", "output folder: checkpoints, sample grids, curves, history.json, train.log")
    side: int = option(64, "image side in pixels (64: the DCGAN paper's; 112: the aligned crop)", choices=GAN_SIDES)
    crop_style: str = option(
        "aligned5", "crop layout of a folder tree (aligned5: aligned 112x112 faces; box: loose crops)", CROP_STYLES
    )
    epochs: int = option(25, "epochs to train (in all, counting those before a resume)", valid=(positive, "> 0"))
    batch_size: int = option(128, "images per step", valid=(positive, "> 0"))
    lr: float = option(2e-4, "Adam learning rate of both networks (the DCGAN paper's)", valid=(positive, "> 0"))
    beta1: float = option(0.5, "Adam's beta1 (the paper's 0.5)", valid=(lambda v: 0 <= v < 1, "in [0, 1)"))
    nz: int = option(100, "length of the noise vector", valid=(positive, "> 0"))
    width: int = option(64, "feature maps of the first/last layers (ngf = ndf)", valid=(positive, "> 0"))
    augment_flip: bool = option(True, "mirror each real image with probability 1/2")
    seed: int = option(42, "seed of the weights, the data order, the noise and the sample grid")
    min_images: int = option(2, "skip identities with fewer images", valid=(lambda v: v >= 2, ">= 2"))
    max_images: int | None = option(None, "keep at most this many images per identity (a seeded choice)", shown="all")
    limit_steps: int | None = option(
        None, "stop each epoch after this many steps (smoke tests)", shown="the whole epoch"
    )
    grid: int = option(64, "fixed-noise samples in each epoch's grid", valid=(positive, "> 0"))
    quality_samples: int = option(
        256,
        "generated (and real) images behind each epoch's Fréchet distance and face share; 0 turns both off",
        valid=(lambda v: v >= 0, ">= 0"),
    )
    quality_weights: str | None = option(
        None,
        "recogniser whose embeddings the Fréchet distance uses: a faceid checkpoint or InceptionResnetV1 weights",
        shown="$FACEID_WEIGHTS or the cached VGGFace2 weights; neither: no Fréchet distance",
    )
    device: str = option("auto", "auto, cpu, cuda or cuda:N")
    precision: str = option("auto", "autocast: auto = bf16 on GPUs that have it, else fp32", GAN_PRECISIONS)
    channels_last: bool | None = option(None, "channels_last memory format", shown="on for CUDA")
    workers: int | None = option(None, "DataLoader workers", shown="as the trainer: by CPUs and decode")

    def to_dict(self) -> dict:
        return to_dict(self)
