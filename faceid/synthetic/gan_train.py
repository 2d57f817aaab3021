"""The DCGAN run (train_gan.py): the trainer's data feed, precision and Ctrl-C handling, a GAN's two-step loop.

What it shares with the recogniser's trainer (`faceid.train`): the image index (`faceid.data.datasets`: a
JPG tree, a .rec or folder-per-identity), the feed (`faceid.train.feed`: cv2 workers or nvJPEG, decoded one
batch ahead, resumable `EpochSampler`), bf16 autocast and channels_last on CUDA (`faceid.train.recipe`), the
stop flag (a resumable checkpoint at the next step on SIGINT/SIGTERM, exit 130/143), the RNG capture that
makes a resume exact (`faceid.train.rng`) and the log (`faceid.train.runlog`). What it cannot share is the
classification step: a GAN alternates two optimizers over two networks, so this module owns that loop.

Per step (the DCGAN paper's recipe): the discriminator takes a BCE step on a real batch (target 1) and a
generated one (target 0); the generator takes a BCE step to make the discriminator say 1. Per epoch: a grid of
the same fixed-noise samples (``samples_epoch_NNN.png``), the loss curves (``curves_gan.png``), the quality
(`frechet.FaceQuality`: Fréchet distance in the recogniser's embedding space and MTCNN's face share),
``history.json``, and ``gan_last.pth`` (resume it exactly with ``train_gan.py --resume``); ``gan_final.pth``
at the end.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..core import report
from ..core.decode import decode_image
from ..core.defaults import HISTORY
from ..core.device import describe_device, resolve_device
from ..core.errors import FaceIDError
from ..core.fileio import atomic_write_json
from ..data.datasets import open_dataset
from ..train.feed import BatchFeed, DecodeAhead, EpochSampler, FaceSamples, make_loader, resolve_decode
from ..train.recipe import StopFlag, autocast_context, default_workers, resolve_precision
from ..train.rng import capture_rng_state, restore_rng_state
from ..train.runlog import RunLog
from .gan import Discriminator, Generator, fixed_noise, init_dcgan_weights
from .gan_checkpoint import GAN_FINAL, GAN_LAST, GanCheckpoint, load_gan_checkpoint, save_gan_checkpoint
from .gan_config import GanConfig
from .images import grid_of, to_rgb_images, write_png
from .plots import plot_gan

CURVE_EVERY = 10  # steps between points of the loss curve
QUALITY_SEED_OFFSET = 1  # the quality sample's noise: seed + 1 (the grid's is the seed itself)


def gan_precision(choice: str, device: torch.device) -> str:
    """bf16 where the trainer would pick it, else fp32 (fp16 would need a loss scaler per network)."""
    resolved = resolve_precision(choice, device)
    return "bf16" if resolved == "bf16" else "fp32"


class GanRun:
    """A DCGAN run, complete after construction: a new one (`GanRun(cfg)`) or one resumed exactly from a
    checkpoint (`GanRun.resume`), where the data order, the noise and the flips continue as if uninterrupted."""

    def __init__(self, cfg: GanConfig, origin: GanCheckpoint | None = None):
        self.cfg = cfg
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise FaceIDError("train_gan.py trains in one process; start it without torchrun.")
        self.device = resolve_device(cfg.device)
        self.precision = gan_precision(cfg.precision, self.device)
        self.channels_last = self.device.type == "cuda" if cfg.channels_last is None else cfg.channels_last
        self.out = Path(cfg.out).expanduser()
        self.log = RunLog(self.out)
        self._open_data()
        if origin is None:
            torch.manual_seed(cfg.seed)
        self.generator = Generator(cfg.side, cfg.nz, cfg.width)
        self.discriminator = Discriminator(cfg.side, cfg.width)
        if origin is None:
            init_dcgan_weights(self.generator)
            init_dcgan_weights(self.discriminator)
        else:
            self.generator.load_state_dict(origin.generator)
            self.discriminator.load_state_dict(origin.discriminator)
        memory = torch.channels_last if self.channels_last else torch.contiguous_format
        self.generator.to(self.device).to(memory_format=memory)
        self.discriminator.to(self.device).to(memory_format=memory)
        fused = True if self.device.type == "cuda" else None
        betas = (cfg.beta1, 0.999)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr, betas=betas, fused=fused)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.lr, betas=betas, fused=fused)
        self.epoch, self.step, self.step_in_epoch = 0, 0, 0
        self.progress = _fresh_progress()
        self.history: list[dict] = []
        self.curve: list[dict] = []
        if origin is not None:
            self.opt_g.load_state_dict(origin.opt_g)
            self.opt_d.load_state_dict(origin.opt_d)
            self.epoch, self.step, self.step_in_epoch = origin.epoch, origin.step, origin.step_in_epoch
            self.progress, self.history, self.curve = dict(origin.progress), list(origin.history), list(origin.curve)
            restore_rng_state(origin.rng)
        self.grid_noise = fixed_noise(cfg.grid, cfg.nz, cfg.seed)
        self.quality = None  # built on the first epoch end that measures (`_quality`)

    @classmethod
    def resume(cls, path: str | Path, epochs: int | None = None, **changes) -> GanRun:
        """Continue `path` exactly; `epochs` may extend the run, `changes` may move paths, workers or device."""
        ckpt = load_gan_checkpoint(path)
        given: dict[str, Any] = {**changes, **({"epochs": epochs} if epochs else {})}
        cfg = replace(ckpt.config, **given)
        if cfg.epochs <= ckpt.epoch and ckpt.step_in_epoch == 0:
            raise FaceIDError(
                f"{path} has already trained {ckpt.epoch} epochs; give a larger --epochs to continue.", "epochs"
            )
        return cls(cfg, ckpt)

    def _open_data(self) -> None:
        cfg = self.cfg
        self.data = open_dataset(cfg.data, cfg.min_images, cfg.max_images, cfg.seed, cfg.crop_style)
        self.decode = resolve_decode("auto", self.device)
        self.spec = replace(self.data.spec, size=cfg.side, flip=False)  # network input at the generator's side
        self.feed = BatchFeed(self.spec, self.device, self.decode, self.channels_last)
        self.steps_per_epoch = len(self.data) // cfg.batch_size
        if self.steps_per_epoch == 0:
            raise FaceIDError(
                f"Only {len(self.data)} images for a batch of {cfg.batch_size}; the batch size must be smaller.",
                "batch_size",
            )
        if cfg.limit_steps:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.limit_steps)
        self.sampler = EpochSampler(len(self.data), cfg.batch_size, seed=cfg.seed)
        workers = default_workers(self.decode, 1) if cfg.workers is None else cfg.workers
        samples = FaceSamples(self.data, decode_on_cpu=self.decode == "cpu")
        self.loader = make_loader(samples, cfg.batch_size, workers, self.sampler, pin_memory=self.device.type == "cuda")

    # --- the loop ---------------------------------------------------------------------------------
    def run(self) -> int:
        cfg = self.cfg
        self.log.line(
            f"DCGAN {cfg.side}x{cfg.side} on {len(self.data)} images of {self.data.num_identities} identities "
            f"({self.data.root}); batch {cfg.batch_size}, {self.steps_per_epoch} steps/epoch, epochs "
            f"{self.epoch + 1}-{cfg.epochs}; {describe_device(self.device)}, {self.precision}"
            f"{', channels_last' if self.channels_last else ''}"
        )
        stop = StopFlag()
        try:
            while self.epoch < cfg.epochs:
                if not self.train_epoch(stop):
                    save_gan_checkpoint(self.out / GAN_LAST, self.checkpoint("last"))
                    self.log.line(
                        f"Stopped at epoch {self.epoch + 1}, step {self.step_in_epoch}; resume with: "
                        f"{report.invocation('train_gan.py')} --resume {self.out / GAN_LAST}"
                    )
                    return stop.exit_code
                self.end_epoch()
        finally:
            stop.restore()
            self.log.close()
        save_gan_checkpoint(self.out / GAN_FINAL, self.checkpoint("final"))
        self.log.line(f"Done: {self.out / GAN_FINAL}; samples: {self.out / 'samples_epoch_*.png'}")
        return 0

    def train_epoch(self, stop: StopFlag) -> bool:
        """The rest of the current epoch; False when a stop was requested (the state is then mid-epoch)."""
        cfg = self.cfg
        self.sampler.set_epoch(self.epoch, self.step_in_epoch)
        bar = report.progress(
            total=self.steps_per_epoch,
            initial=self.step_in_epoch,
            unit="step",
            desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
        )
        started = time.perf_counter()
        window: list[torch.Tensor] = []
        with DecodeAhead(self.loader, self.feed, self.data) as batches:
            while self.step_in_epoch < self.steps_per_epoch:
                crops = next(batches, None)
                if crops is None:
                    break
                real, _ = self.feed.finish(*crops, augment=cfg.augment_flip)
                window.append(self.train_step(real))
                self.step += 1
                self.step_in_epoch += 1
                self.progress["images"] += len(real)
                bar.update(1)
                if len(window) == CURVE_EVERY or self.step_in_epoch == self.steps_per_epoch or stop.requested:
                    self._record(torch.stack(window).double().cpu().numpy())
                    window = []
                if stop.poll(self.step):
                    break
        bar.close()
        self.progress["seconds"] += time.perf_counter() - started
        return self.step_in_epoch >= self.steps_per_epoch

    def train_step(self, real: torch.Tensor) -> torch.Tensor:
        """One discriminator step and one generator step; (loss_d, loss_g, D(x), D(G(z))) as a tensor."""
        n = real.shape[0]
        z = torch.randn(n, self.cfg.nz, device=self.device)
        ones, zeros = torch.ones(n, device=self.device), torch.zeros(n, device=self.device)
        with autocast_context(self.precision, self.device):
            fake = self.generator(z)
            if self.channels_last:
                fake = fake.contiguous(memory_format=torch.channels_last)
            out_real = self.discriminator(real).float()
            out_fake = self.discriminator(fake.detach()).float()
            loss_d = F.binary_cross_entropy_with_logits(out_real, ones) + F.binary_cross_entropy_with_logits(
                out_fake, zeros
            )
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        with autocast_context(self.precision, self.device):
            loss_g = F.binary_cross_entropy_with_logits(self.discriminator(fake).float(), ones)
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        return torch.stack(
            [
                loss_d.detach(),
                loss_g.detach(),
                torch.sigmoid(out_real).mean().detach(),
                torch.sigmoid(out_fake).mean().detach(),
            ]
        )

    def _record(self, values: np.ndarray) -> None:
        sums = values.sum(0)
        if not np.isfinite(sums).all():
            raise FaceIDError(
                f"The GAN's losses became non-finite at step {self.step}; a lower --lr avoids that.", "lr"
            )
        for key, total in zip(("loss_d", "loss_g", "d_real", "d_fake"), sums):
            self.progress[key] += float(total)
        self.progress["steps"] += len(values)
        mean = values.mean(0)
        self.curve.append({"step": self.step, "loss_d": float(mean[0]), "loss_g": float(mean[1])})

    # --- the end of an epoch ----------------------------------------------------------------------
    def end_epoch(self) -> None:
        cfg, p = self.cfg, self.progress
        record: dict = {"epoch": self.epoch + 1, "steps": p["steps"]}
        for key in ("loss_d", "loss_g", "d_real", "d_fake"):
            record[key] = p[key] / max(1, p["steps"])
        record["images_per_s"] = p["images"] / p["seconds"] if p["seconds"] > 0 else None
        grid = self.sample(self.grid_noise)
        write_png(self.out / f"samples_epoch_{self.epoch + 1:03d}.png", grid_of(grid))
        quality = self._quality()
        if quality is not None:
            record.update(quality.measure(self.sample(self._quality_noise())))
        self.epoch += 1
        self.step_in_epoch = 0
        self.progress = _fresh_progress()
        self.history.append(record)
        atomic_write_json(self.out / HISTORY, self.history)
        plot_gan(self.history, self.curve, self.out)
        save_gan_checkpoint(self.out / GAN_LAST, self.checkpoint("last"))
        self.log.line(epoch_line(record, cfg.epochs))

    @torch.no_grad()
    def sample(self, noise: torch.Tensor) -> np.ndarray:
        """Generated images (eval mode: BatchNorm's running statistics, so image k depends on its noise alone)."""
        self.generator.eval()
        try:
            with autocast_context(self.precision, self.device):
                x = torch.cat([self.generator(z.to(self.device)).float() for z in noise.split(256)])
        finally:
            self.generator.train()
        return to_rgb_images(x)

    def _quality_noise(self) -> torch.Tensor:
        return fixed_noise(self.cfg.quality_samples, self.cfg.nz, self.cfg.seed + QUALITY_SEED_OFFSET)

    def _quality(self):
        """The quality probe (built once), or None when turned off or no recogniser weights are at hand."""
        cfg = self.cfg
        if cfg.quality_samples < 2:
            return None
        if self.quality is None:
            from ..model.embedder import choose_embedder
            from .frechet import FaceQuality

            try:
                embedder = choose_embedder(
                    weights=cfg.quality_weights, crop="aligned5", device=str(self.device), download=False
                )
            except FaceIDError as err:
                report.warn(f"warning: no Fréchet distance or face share ({err}); --quality-weights FILE gives them")
                self.cfg = replace(cfg, quality_samples=0)
                return None
            pick = np.random.default_rng(cfg.seed).choice(
                len(self.data), min(cfg.quality_samples, len(self.data)), replace=False
            )
            real = np.stack(
                [decode_image(self.data.read_bytes(int(i)), self.data.describe(int(i))) for i in np.sort(pick)]
            )
            self.quality = FaceQuality(embedder, real, cfg.side)
        return self.quality

    def checkpoint(self, kind: str) -> GanCheckpoint:
        cpu = lambda sd: {k: v.detach().cpu().clone() for k, v in sd.items()}  # noqa: E731
        return GanCheckpoint(
            kind=kind,
            config=self.cfg,
            generator=cpu(self.generator.state_dict()),
            discriminator=cpu(self.discriminator.state_dict()),
            opt_g=self.opt_g.state_dict(),
            opt_d=self.opt_d.state_dict(),
            epoch=self.epoch,
            step=self.step,
            step_in_epoch=self.step_in_epoch,
            progress=dict(self.progress),
            rng=capture_rng_state(),
            history=list(self.history),
            curve=list(self.curve),
        )


def _fresh_progress() -> dict:
    return {"loss_d": 0.0, "loss_g": 0.0, "d_real": 0.0, "d_fake": 0.0, "steps": 0, "images": 0, "seconds": 0.0}


def epoch_line(record: dict, epochs: int) -> str:
    speed = f"{record['images_per_s']:.0f} img/s" if record.get("images_per_s") else "-"
    text = (
        f"epoch {record['epoch']}/{epochs}: loss D {record['loss_d']:.3f} G {record['loss_g']:.3f}, "
        f"D(x) {record['d_real']:.2f} D(G(z)) {record['d_fake']:.2f}, {speed}"
    )
    if "frechet" in record and math.isfinite(record["frechet"]):
        text += (
            f"; Fréchet {record['frechet']:.3f}, faces found in {100 * record['face_share']:.0f}% "
            f"(real: {100 * record['real_face_share']:.0f}%)"
        )
    return text
