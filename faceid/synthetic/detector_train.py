"""Training the real-vs-synthetic detector (train_detector.py) with the trainer's machinery.

Shared with the recogniser's trainer (`faceid.train`): the feed (`feed`: cv2 workers or nvJPEG, decoded a
batch ahead, the resumable `EpochSampler` with each rank's share), the precision (`recipe`: bf16 autocast on
Ampere+, fp16 + GradScaler below, fp32 on CPU; channels_last on CUDA), the optimizer (`recipe.build_optimizer`:
no weight decay on BN and biases), DDP under torchrun (`recipe.setup_distributed`, `wrap_model`), the stop flag
(SIGINT/SIGTERM: a resumable checkpoint at the next step, exit 130/143), the RNG capture of every rank
(`state.gather_rng_states`) and the log (`runlog`). The step is binary cross-entropy on one logit (the classes
weighted to count equally), so it is this module's own short loop rather than the identity classifier's.

Per epoch (rank 0): validation on the held-out identities and sources -> accuracy at the threshold, ROC AUC,
EER, the threshold at ``--frr`` (the share of real faces flagged) with the synthetic faces it catches there;
``history.json``, ``curves_detector.png``, ``detector_last.pth`` (resumable: ``--resume``) and
``detector_best.pth`` (best validation AUC): the file the app's ``--synthetic-detector`` takes.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..core import report
from ..core.defaults import HISTORY
from ..core.device import describe_device
from ..core.errors import FaceIDError
from ..core.fileio import atomic_write_json
from ..eval.verification_metrics import equal_error_rate, roc_auc, roc_curve
from ..model.checkpoint import read_state_dict
from ..model.network import build_backbone, load_backbone_weights, resolve_weights
from ..train.feed import BatchFeed, DecodeAhead, EpochSampler, FaceSamples, make_loader, resolve_decode
from ..train.recipe import (
    StopFlag,
    autocast_context,
    broadcast_from_main,
    build_optimizer,
    default_workers,
    resolve_precision,
    setup_distributed,
    stop_agreed,
    wrap_model,
)
from ..train.rng import restore_rng_state
from ..train.runlog import RunLog
from ..train.state import gather_rng_states
from .detector_config import DetectorConfig
from .detector_data import REAL, SYNTHETIC, open_detector_data, split_by_group
from .detector_model import DetectorCheckpoint, detector_network, read_detector_checkpoint, save_detector_checkpoint
from .plots import plot_detector
from .settings import build

DETECTOR_BEST, DETECTOR_LAST, DETECTOR_FINAL = "detector_best.pth", "detector_last.pth", "detector_final.pth"
DEGRADE_SIDE = 64  # the GAN's default side: real faces are sometimes shown at it (`DetectorConfig.degrade_real`)


def threshold_at_frr(real_scores: np.ndarray, frr: float) -> float:
    """The lowest score threshold that flags at most `frr` of the real faces (flagged: score >= threshold)."""
    s = np.sort(np.asarray(real_scores, np.float64))[::-1]
    allowed = int(math.floor(frr * len(s)))  # real faces that may score at or above the threshold
    if allowed >= len(s):
        return 0.0
    return float(min(1.0, np.nextafter(s[allowed], np.inf)))


def detector_metrics(scores: np.ndarray, labels: np.ndarray, frr: float) -> dict[str, Any]:
    """Validation of scores (high = synthetic) against labels (1 = synthetic)."""
    synthetic = labels == SYNTHETIC
    fpr, tpr, thr = roc_curve(scores, synthetic)
    eer, _ = equal_error_rate(fpr, tpr, thr)
    threshold = threshold_at_frr(scores[~synthetic], frr)
    flagged = scores >= threshold
    return {
        "accuracy": float((flagged == synthetic).mean()),
        "auc": roc_auc(fpr, tpr),
        "eer": eer,
        "threshold": threshold,
        "frr_asked": frr,
        "frr": float(flagged[~synthetic].mean()),
        "synthetic_caught": float(flagged[synthetic].mean()),
        "accuracy_at_half": float(((scores >= 0.5) == synthetic).mean()),
        "real": int((~synthetic).sum()),
        "synthetic": int(synthetic.sum()),
    }


class DetectorRun:
    """One detector run (one process of it), complete after construction: new, or resumed exactly."""

    def __init__(self, cfg: DetectorConfig, origin: DetectorCheckpoint | None = None):
        self.cfg = cfg
        self.env = setup_distributed(cfg.device)
        device = self.env.device
        self.precision = resolve_precision(cfg.precision, device)
        self.channels_last = device.type == "cuda" if cfg.channels_last is None else cfg.channels_last
        self.out = Path(cfg.out).expanduser()
        self.log = RunLog(self.out, enabled=self.env.main)
        self._open_data()
        torch.manual_seed(cfg.seed)
        self.net = detector_network(backbone=self._backbone(origin is None)).to(device)
        if cfg.freeze_backbone:
            for name, param in self.net.named_parameters():
                param.requires_grad_(name.startswith("logits."))
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision == "fp16")
        self.optimizer = build_optimizer(cfg, self.net, cfg.lr, device)
        self.epoch, self.step, self.step_in_epoch = 0, 0, 0
        self.progress = {"loss_sum": 0.0, "steps": 0, "images": 0, "seconds": 0.0}
        self.history: list[dict] = []
        self.best: dict = {}
        if origin is not None:
            assert origin.training is not None  # `resume` refuses a file without a training state
            t = origin.training
            self.net.load_state_dict(origin.model)
            self.optimizer.load_state_dict(t["optimizer"])
            self.scaler.load_state_dict(t["scaler"])
            self.epoch, self.step, self.step_in_epoch = t["epoch"], t["step"], t["step_in_epoch"]
            self.progress, self.history, self.best = dict(t["progress"]), list(t["history"]), dict(t["best"])
            if len(t["rng"]) == self.env.world:
                restore_rng_state(t["rng"][self.env.rank])

    @classmethod
    def resume(cls, path: str | Path, epochs: int | None = None, **changes) -> DetectorRun:
        ckpt = read_detector_checkpoint(path)
        if ckpt.training is None or not isinstance(ckpt.training.get("config"), dict):
            raise FaceIDError(f"{path} holds no training state; resume from detector_last.pth.")
        given: dict[str, Any] = {**changes, **({"epochs": epochs} if epochs else {})}
        cfg = replace(build(DetectorConfig, dict(ckpt.training["config"]), str(path)), **given)
        return cls(cfg, ckpt)

    def _open_data(self) -> None:
        cfg, env = self.cfg, self.env
        self.data = open_detector_data(cfg)
        self.train_idx, self.val_idx = split_by_group(self.data, cfg.val_fraction, cfg.seed)
        self.decode = resolve_decode("auto", env.device)
        self.feed = BatchFeed(self.data.spec, env.device, self.decode, self.channels_last)
        self.workers = default_workers(self.decode, env.world) if cfg.workers is None else cfg.workers
        self.steps_per_epoch = len(self.train_idx) // (cfg.batch_size * env.world)
        if self.steps_per_epoch == 0:
            raise FaceIDError(
                f"Only {len(self.train_idx)} training faces for a batch of {cfg.batch_size}; the batch size must be "
                f"smaller.",
                "batch_size",
            )
        if cfg.limit_steps:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.limit_steps)
        self.sampler = EpochSampler(len(self.train_idx), cfg.batch_size, env.world, env.rank, cfg.seed)
        samples = FaceSamples(self.data, self.train_idx, decode_on_cpu=self.decode == "cpu")  # type: ignore[arg-type]  # duck-typed: the feed reads read_bytes, labels, spec, describe
        pin = env.device.type == "cuda"
        self.loader = make_loader(samples, cfg.batch_size, self.workers, self.sampler, pin_memory=pin)
        train_labels = self.data.labels[self.train_idx]
        n_syn = int((train_labels == SYNTHETIC).sum())
        # each class counts equally in the loss, whatever their numbers
        self.pos_weight = torch.tensor((len(train_labels) - n_syn) / max(1, n_syn), device=env.device)

    def _backbone(self, init: bool) -> torch.nn.Module:
        backbone = build_backbone()
        if init and not self.cfg.from_scratch:
            try:
                path = resolve_weights(self.cfg.weights)
            except FaceIDError as err:
                if self.cfg.weights:
                    raise
                report.warn(f"warning: training the detector from scratch ({err})")
                return backbone
            load_backbone_weights(backbone, read_state_dict(path), str(path))
            self.init_weights = str(path)
        return backbone

    # --- the loop ---------------------------------------------------------------------------------
    def run(self) -> int:
        cfg, env = self.cfg, self.env
        val_labels = self.data.labels[self.val_idx]
        self.log.line(
            f"detector: {int((self.data.labels[self.train_idx] == REAL).sum())} real / "
            f"{int((self.data.labels[self.train_idx] == SYNTHETIC).sum())} synthetic training faces, validation on "
            f"{int((val_labels == REAL).sum())} real faces of unseen people / {int((val_labels == SYNTHETIC).sum())} "
            f"unseen synthetic; input {cfg.input_size} px, batch {cfg.batch_size}x{env.world}, "
            f"{self.steps_per_epoch} steps/epoch; {describe_device(env.device)}, {self.precision}"
        )
        model = wrap_model(self.net, env, False)
        stop = StopFlag(announce=env.main)
        started = time.perf_counter()
        limit = cfg.time_limit * 60 if cfg.time_limit else math.inf
        try:
            while self.epoch < cfg.epochs:
                if not self.train_epoch(model, stop, started + limit):
                    if stop.requested:
                        rng = gather_rng_states(env)  # collective: every rank
                        if env.main:
                            self._save(DETECTOR_LAST, "last", self.history[-1]["val"] if self.history else {}, rng)
                        self.log.line(
                            f"Stopped at epoch {self.epoch + 1}, step {self.step_in_epoch}; resume with: "
                            f"{report.invocation('train_detector.py')} --resume {self.out / DETECTOR_LAST}"
                        )
                        return stop.exit_code
                self.end_epoch()
                if time.perf_counter() > started + limit:
                    self.log.line(f"Time limit of {cfg.time_limit} minutes reached after epoch {self.epoch}.")
                    break
        finally:
            stop.restore()
            self.log.close()
        rng = gather_rng_states(env)  # collective: every rank
        if env.main:
            self._save(DETECTOR_FINAL, "final", self.history[-1]["val"], rng)
            self.log.line(summary_table(self.best["val"], self.out / DETECTOR_BEST, self.best["epoch"]))
        return 0

    def train_epoch(self, model, stop: StopFlag, deadline: float) -> bool:
        """The rest of the epoch; False when stopped (by a signal, or out of time: then the epoch ends here)."""
        cfg, env = self.cfg, self.env
        self.sampler.set_epoch(self.epoch, self.step_in_epoch)
        bar = report.progress(
            total=self.steps_per_epoch,
            initial=self.step_in_epoch,
            unit="step",
            desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
            enabled=env.main,
        )
        t0 = time.perf_counter()
        self._train_mode()
        loss_acc = torch.zeros((), dtype=torch.float64, device=env.device)
        with DecodeAhead(self.loader, self.feed, self.data) as batches:
            while self.step_in_epoch < self.steps_per_epoch:
                batch = next(batches, None)
                if batch is None:
                    break
                crops, labels = batch
                x, y = self.feed.finish(self._degrade_real(crops, labels), labels, augment=cfg.augment_flip)
                with autocast_context(self.precision, env.device):
                    logits = model(x).float().reshape(-1)
                    loss = F.binary_cross_entropy_with_logits(logits, y.float(), pos_weight=self.pos_weight)
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                loss_acc += loss.detach().double()
                self.step += 1
                self.step_in_epoch += 1
                self.progress["images"] += len(y) * env.world
                bar.update(1)
                if stop_agreed(env, stop, self.step) or time.perf_counter() > deadline:
                    break
        bar.close()
        value = float(loss_acc)
        if not math.isfinite(value):
            raise FaceIDError(f"The detector's loss became {value}; a lower --lr or fp32 avoids that.", "lr")
        self.progress["loss_sum"] += value
        self.progress["steps"] = self.step_in_epoch
        self.progress["seconds"] += time.perf_counter() - t0
        return self.step_in_epoch >= self.steps_per_epoch

    def _train_mode(self) -> None:
        """Training mode, except a frozen backbone, whose BatchNorm keeps its statistics (a fixed feature)."""
        self.net.train(not self.cfg.freeze_backbone)

    def _degrade_real(self, crops: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Show a share of the real faces at the generator's resolution (shrunk to 64 px and enlarged back)."""
        p = self.cfg.degrade_real
        if p <= 0 or crops.shape[-1] <= DEGRADE_SIDE:
            return crops
        pick = (torch.rand(len(labels), device=crops.device) < p) & (labels == REAL)
        small = F.interpolate(crops.float(), size=(DEGRADE_SIDE, DEGRADE_SIDE), mode="area")
        back = F.interpolate(small, size=crops.shape[-2:], mode="bilinear", align_corners=False)
        back = back.round().clamp(0, 255).to(crops.dtype)
        return torch.where(pick[:, None, None, None], back, crops)

    # --- validation and files ---------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict[str, Any]:
        samples = FaceSamples(self.data, self.val_idx, decode_on_cpu=self.decode == "cpu")  # type: ignore[arg-type]  # duck-typed, as in _open_data
        loader = make_loader(
            samples, self.cfg.batch_size, 0 if self.decode == "gpu" else self.workers, persistent=False
        )
        self.net.eval()
        scores = []
        try:
            for batch in loader:
                x, _ = self.feed(batch, source=self.data)
                with autocast_context(self.precision, self.env.device):
                    scores.append(torch.sigmoid(self.net(x).float().reshape(-1)).cpu())
        finally:
            self._train_mode()
        return detector_metrics(
            torch.cat(scores).numpy().astype(np.float64), self.data.labels[self.val_idx], self.cfg.frr
        )

    def end_epoch(self) -> None:
        env, p = self.env, self.progress
        val = broadcast_from_main(env, self.validate() if env.main else None)
        record = {
            "epoch": self.epoch + 1,
            "train_loss": p["loss_sum"] / max(1, p["steps"]),
            "images_per_s": p["images"] / p["seconds"] if p["seconds"] > 0 else None,
            "val": val,
        }
        self.history.append(record)
        self.epoch += 1
        self.step_in_epoch = 0
        self.progress = {"loss_sum": 0.0, "steps": 0, "images": 0, "seconds": 0.0}
        improved = not self.best or val["auc"] > self.best["val"]["auc"]
        if improved:
            self.best = {"epoch": record["epoch"], "val": val}
        rng = gather_rng_states(env)  # collective: every rank
        if not env.main:
            return
        atomic_write_json(self.out / HISTORY, self.history)
        plot_detector(self.history, self.out)
        if improved:
            self._save(DETECTOR_BEST, "best", val, rng)
        self._save(DETECTOR_LAST, "last", val, rng)
        self.log.line(
            f"epoch {record['epoch']}/{self.cfg.epochs}: loss {record['train_loss']:.4f}; validation accuracy "
            f"{100 * val['accuracy']:.1f}%, AUC {val['auc']:.4f}, EER {100 * val['eer']:.1f}%, at FRR "
            f"{100 * val['frr']:.1f}% it catches {100 * val['synthetic_caught']:.1f}% (threshold {val['threshold']:.3f})"
        )

    def _save(self, name: str, kind: str, val: dict, rng: list) -> None:
        """Rank 0 writes `name`; `rng` is every rank's RNG states (`gather_rng_states`, called by every rank)."""
        state = {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}
        training = {
            "config": self.cfg.to_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "step_in_epoch": self.step_in_epoch,
            "progress": dict(self.progress),
            "history": list(self.history),
            "best": dict(self.best),
            "rng": rng,
            "world_size": self.env.world,
        }
        save_detector_checkpoint(
            self.out / name,
            DetectorCheckpoint(
                model=state,
                preprocess=self.data.spec.to_dict(),
                threshold=float(val.get("threshold", 0.5)),
                threshold_info={
                    "frr_asked": self.cfg.frr,
                    "frr_measured": val.get("frr"),
                    "on": "validation" if val else "none: stopped before the first validation (0.5 assumed)",
                },
                metrics=val,
                trained_on={**self.data.trained_on(), "init_weights": getattr(self, "init_weights", "scratch")},
                kind=kind,
                training=training,
            ),
        )


def summary_table(val: dict, path: Path, epoch: int) -> str:
    """The detector's table (what docs/synthetic.md shows): held-out validation of the best epoch."""
    rows = [
        ("validation faces", f"{val['real']} real (unseen people), {val['synthetic']} synthetic (unseen)"),
        ("accuracy at the threshold", f"{100 * val['accuracy']:.1f}%"),
        ("accuracy at score 0.5", f"{100 * val['accuracy_at_half']:.1f}%"),
        ("ROC AUC", f"{val['auc']:.4f}"),
        ("EER", f"{100 * val['eer']:.2f}%"),
        (
            f"threshold at FRR {100 * val['frr_asked']:g}%",
            f"{val['threshold']:.4f} (measured FRR {100 * val['frr']:.1f}%)",
        ),
        ("synthetic caught at it", f"{100 * val['synthetic_caught']:.1f}%"),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"detector {path} (epoch {epoch}):"] + [f"  {k.ljust(width)}  {v}" for k, v in rows]
    return "\n".join(lines)
