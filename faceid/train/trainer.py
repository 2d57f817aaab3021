"""The trainer: a run's data, network and optimizer, the loop, and the entry points.

The settings live in `faceid.train.config`, the checkpoint schema in `faceid.model.checkpoint`; the run's
parts each have a module of their own: what it has done so far (`bookkeeping`), saving and restoring that in a
checkpoint (`state`, `rng`), the text it prints (`report`), the log (`runlog`), and the recipe's parts
(precision, optimizer, schedule, process group, Ctrl-C flag) in `recipe`. A `Trainer` is complete after
construction: `Trainer.new_run`, `Trainer.resume` (exact) or `Trainer.next_phase`.

What a run does (train_model.py -> `train`; continue_training.py -> `continue_training`):
1. open the data (`faceid.data.datasets`), hold out whole identities for verification, split the rest 80/20
   (seed 42) for the seed's closed-set accuracy, train on the 80%;
2. build InceptionResnetV1 (VGGFace2 weights / --weights / --from-scratch) + a head (`faceid.train.heads`);
3. per step: a batch of encoded images -> decode (nvJPEG on CUDA, cv2 in workers on CPU) -> `to_network_input`
   -> autocast (bf16 on Ampere+, fp16 + GradScaler on older GPUs, fp32 on CPU) -> channels_last -> step;
4. per epoch (rank 0): `faceid.train.validation` -> history, curves, train.log, last/best checkpoints (best by
   a verification metric, with the held-out calibration table; the slim inference checkpoint beside it);
   final checkpoint at the end.

Distributed: launched by torchrun or `faceid.train.launch` (WORLD_SIZE > 1) it uses DDP (NCCL on GPUs, gloo on
CPU); every rank trains on its share of each epoch's permutation, rank 0 alone validates, logs and writes files.
SIGINT / SIGTERM (Ctrl-C, kill, scancel, preemption; loader workers ignore both): a handler sets a flag, the
ranks agree on it every step, and at that step boundary the state is saved to last_face_model.pth (resumable
exactly) and the run exits with 130 (SIGINT) or 143 (SIGTERM) and one "Resume with: ..." line.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..core import report
from ..core.defaults import BEST_CHECKPOINT, FINAL_CHECKPOINT, HISTORY, LABEL_MAP, LAST_CHECKPOINT
from ..core.device import describe_device
from ..core.errors import FaceIDError
from ..core.fileio import atomic_write_json
from ..data.datasets import find_verification_bins, open_dataset, split_identities, split_images
from ..model.checkpoint import Checkpoint, load_checkpoint, read_state_dict, save_checkpoint, save_inference_checkpoint
from ..model.export import default_outputs
from ..model.network import build_backbone, load_backbone_weights, resolve_weights
from .bookkeeping import Bookkeeping, Phase, fresh_progress
from .config import TrainConfig, refused_changes
from .feed import BatchFeed, DecodeAhead, EpochSampler, FaceSamples, clean_worker_error, make_loader, resolve_decode
from .heads import TrainNet, build_head, head_config
from .plots import plot_history
from .recipe import (
    Dist,
    StopFlag,
    any_rank,
    autocast_context,
    broadcast_from_main,
    build_optimizer,
    build_scheduler,
    default_batch_size,
    default_workers,
    resolve_precision,
    scaled_lr,
    setup_distributed,
    stop_agreed,
    wrap_model,
)
from .report import RunSetup, epoch_line, interruption_line, run_header, run_summary, time_limit_line
from .runlog import RunLog
from .selection import best_record, choose_selection, improves
from .state import (
    bookkeeping_of,
    gather_rng_states,
    restore_optimization,
    restore_rng,
    restore_weights,
    training_checkpoint,
    training_state_of,
)
from .validation import LOWER_IS_BETTER, Validator, metric_value

BEST, FINAL, LAST = BEST_CHECKPOINT, FINAL_CHECKPOINT, LAST_CHECKPOINT


class Trainer:
    """Owns the data, network, optimizer, schedule and bookkeeping of one run (one process of it).

    Complete after construction, for one of three starts (use the classmethods): `new_run` (phase 0 from the
    initial weights), `resume` (exactly where a checkpoint stopped: same phase, optimizer, schedule, RNG) or
    `next_phase` (a checkpoint's weights, history and counters with a fresh optimizer and schedule)."""

    LOG_EVERY = 20

    def __init__(self, cfg: TrainConfig, env: Dist, origin: Checkpoint | None = None, exact: bool = False):
        self.cfg, self.env = cfg, env
        self.precision = resolve_precision(cfg.precision, env.device)
        self.decode = resolve_decode(cfg.decode, env.device)
        self.channels_last = env.device.type == "cuda" if cfg.channels_last is None else cfg.channels_last
        self.batch_size = cfg.batch_size or default_batch_size(env.device)
        self.workers = default_workers(self.decode, env.world) if cfg.workers is None else cfg.workers
        self.out = Path(cfg.out).expanduser()
        self.log = RunLog(self.out, enabled=env.main)
        self._open_data()
        # an explicit --decode gpu fails on an image nvJPEG cannot take; auto decodes it on the CPU and says so
        self.feed = BatchFeed(self.data.spec, env.device, self.decode, self.channels_last, strict=cfg.decode == "gpu")
        self.trained_seconds = 0.0  # training time in this process, for --time-limit
        self.out_of_time = False
        self._build_network(init_weights=origin is None)
        self.book = Bookkeeping()
        if origin is not None:
            restore_weights(self.net, origin, self.data, self.head_cfg)
            self.book = bookkeeping_of(origin)
        if origin is not None and exact:
            self.phase = Phase(**training_state_of(origin).phase)
        else:
            index = 0 if origin is None else int(training_state_of(origin).phase["index"]) + 1
            lr = cfg.lr or scaled_lr(cfg.optimizer, self.batch_size * env.world)
            self.phase = Phase(index, self.book.epoch, self.book.epoch + cfg.epochs, lr)
        self.optimizer = build_optimizer(cfg, self.net, self.phase.lr, env.device)
        self.scheduler, self.per_step = build_scheduler(
            cfg,
            self.optimizer,
            self.steps_per_epoch,
            self.phase.end_epoch - self.phase.start_epoch,
            lower_is_better=cfg.select_metric in LOWER_IS_BETTER,
        )
        if origin is not None and exact:
            restore_optimization(training_state_of(origin), self.optimizer, self.scheduler, self.scaler)
            restore_rng(training_state_of(origin), env)

    @classmethod
    def new_run(cls, cfg: TrainConfig, env: Dist) -> Trainer:
        return cls(cfg, env)

    @classmethod
    def resume(cls, cfg: TrainConfig, env: Dist, ckpt: Checkpoint) -> Trainer:
        return cls(cfg, env, ckpt, exact=True)

    @classmethod
    def next_phase(cls, cfg: TrainConfig, env: Dist, ckpt: Checkpoint) -> Trainer:
        return cls(cfg, env, ckpt, exact=False)

    # --- data -------------------------------------------------------------------------------------
    def _open_data(self) -> None:
        cfg = self.cfg
        full = open_dataset(cfg.data, cfg.min_images, cfg.max_images, cfg.seed, cfg.crop_style)
        self.data, self.heldout = split_identities(full, cfg.holdout_fraction, cfg.seed)
        self.train_idx, self.val_idx = split_images(len(self.data), cfg.val_fraction, cfg.seed)
        self.data_report = full.report
        world_batch = self.batch_size * self.env.world
        self.steps_per_epoch = len(self.train_idx) // world_batch
        if self.steps_per_epoch == 0:
            raise FaceIDError(
                f"Only {len(self.train_idx)} training images for a global batch of {world_batch}; "
                f"the batch size must be smaller.",
                "batch_size",
            )
        if cfg.limit_steps:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.limit_steps)
        self.sampler = EpochSampler(len(self.train_idx), self.batch_size, self.env.world, self.env.rank, cfg.seed)
        samples = FaceSamples(self.data, self.train_idx, decode_on_cpu=self.decode == "cpu")
        self.loader = make_loader(
            samples, self.batch_size, self.workers, self.sampler, pin_memory=self.env.device.type == "cuda"
        )

    def _validator(self) -> Validator:
        amp = lambda: autocast_context(self.precision, self.env.device)  # noqa: E731  (validate as we train)
        return Validator.for_run(
            self.cfg, self.data, self.val_idx, self.heldout, self.feed, self.batch_size, self.workers, amp
        )

    def _selection(self) -> tuple[str, str]:
        """(set, metric) that picks the best checkpoint (`selection.choose_selection`)."""
        benchmarks = [p.stem for p in find_verification_bins(self.data.root)] if self.cfg.bins else []
        return choose_selection(self.cfg, self.heldout is not None, benchmarks)

    # --- model ------------------------------------------------------------------------------------
    def _build_network(self, init_weights: bool) -> None:
        cfg, env = self.cfg, self.env
        backbone = build_backbone(cfg.network)
        if init_weights and not cfg.from_scratch:
            load_backbone_weights(backbone, read_state_dict(self._weights_path()), "the initial weights")
        self.head_cfg = head_config(cfg.head, self.data.num_identities, cfg.scale, cfg.margin)
        head = build_head(cfg.head, self.data.num_identities, scale=cfg.scale, margin=cfg.margin)
        self.net = TrainNet(backbone, head).to(env.device)
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.scaler = torch.amp.GradScaler(env.device.type, enabled=self.precision == "fp16")

    def _weights_path(self) -> Path:
        if self.env.world > 1 and not self.env.main:
            dist.barrier()  # rank 0 downloads first
            return resolve_weights(self.cfg.weights, download=False)
        path = resolve_weights(self.cfg.weights)
        if self.env.world > 1:
            dist.barrier()
        return path

    def wrap(self) -> torch.nn.Module:
        """The module the training step calls: DDP when distributed, compiled when asked (`recipe.wrap_model`)."""
        return wrap_model(self.net, self.env, self.cfg.compile)

    # --- state and text ---------------------------------------------------------------------------
    def state(self, kind: str) -> Checkpoint:
        """The full checkpoint (plain types and tensors). Collective: every rank must call it."""
        return training_checkpoint(
            kind,
            cfg=self.cfg,
            data=self.data,
            net=self.net,
            head_config=self.head_cfg,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.scaler,
            precision=self.precision,
            phase=self.phase,
            book=self.book,
            rng=gather_rng_states(self.env),
        )

    def setup(self) -> RunSetup:
        """What the header and summary say about this run."""
        return RunSetup(
            cfg=self.cfg,
            data_kind=self.data.kind,
            data_report=self.data_report,
            train_identities=self.data.num_identities,
            train_images=len(self.train_idx),
            closed_set_images=len(self.val_idx),
            heldout_identities=self.heldout.num_identities if self.heldout is not None else None,
            head_config=self.head_cfg,
            batch_size=self.batch_size,
            world=self.env.world,
            precision=self.precision,
            channels_last=self.channels_last,
            decode=self.decode,
            workers=self.workers,
            device=describe_device(self.env.device),
            steps_per_epoch=self.steps_per_epoch,
            out=self.out,
        )

    # --- the loop ---------------------------------------------------------------------------------
    def train_epoch(self, model, stop: StopFlag, progress: dict) -> bool:
        """Run the rest of the current epoch; False if a stop was requested (state is then mid-epoch).

        progress accumulates loss_sum / steps / images / seconds for the epoch (kept across a resume)."""
        env, cfg, book = self.env, self.cfg, self.book
        self.sampler.set_epoch(book.epoch, book.step_in_epoch)
        bar = report.progress(
            total=self.steps_per_epoch,
            initial=book.step_in_epoch,
            unit="step",
            desc=f"epoch {book.epoch + 1}/{self.phase.end_epoch}",
            enabled=env.main,
        )
        # float64: a sum split by an interruption (logged partly before, partly after) is then the same number
        loss_acc = torch.zeros((), dtype=torch.float64, device=env.device)
        acc_steps, window_start, window_images = 0, time.perf_counter(), 0
        epoch_start = time.perf_counter()
        limit_s = cfg.time_limit * 60 if cfg.time_limit else math.inf
        decoded_before = self.feed.cpu_decoded
        batches = DecodeAhead(self.loader, self.feed, self.data)  # decodes batch i + 1 while batch i trains
        try:
            while book.step_in_epoch < self.steps_per_epoch:
                if self.time_up(epoch_start, limit_s):
                    self.out_of_time = True  # this epoch ends here, is validated, and the run ends (`run`)
                    break
                crops = next(batches, None)
                if crops is None:
                    break
                x, y = self.feed.finish(*crops, augment=cfg.augment_flip)
                with autocast_context(self.precision, env.device):
                    logits, _ = model(x, y)
                    loss = F.cross_entropy(logits, y)
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                if self.per_step:
                    self.scheduler.step()
                book.step += 1
                book.step_in_epoch += 1
                loss_acc += loss.detach().double()
                acc_steps += 1
                window_images += len(y) * env.world
                bar.update(1)
                at_log = book.step_in_epoch % self.LOG_EVERY == 0 or book.step_in_epoch == self.steps_per_epoch
                stopping = stop_agreed(env, stop, book.step)
                if at_log or stopping:
                    value = float(loss_acc)
                    if not math.isfinite(value):
                        raise FaceIDError(
                            f"The training loss became {value} at step {book.step}; a lower "
                            f"learning rate or fp32 precision avoids that.",
                            "lr",
                            "precision",
                        )
                    progress["loss_sum"] += value
                    progress["steps"] += acc_steps
                    now = time.perf_counter()
                    bar.set_postfix(
                        loss=f"{value / acc_steps:.4f}",
                        lr=f"{self.lr():.2e}",
                        img_s=f"{window_images / max(now - window_start, 1e-9):.0f}",
                    )
                    progress["images"] += window_images
                    loss_acc.zero_()
                    acc_steps, window_start, window_images = 0, now, 0
                if stopping:
                    return False
        except FaceIDError as err:
            raise clean_worker_error(err) from None
        finally:
            batches.close()
            progress["seconds"] += time.perf_counter() - epoch_start
            self.trained_seconds += time.perf_counter() - epoch_start
            progress["cpu_decoded"] = progress.get("cpu_decoded", 0) + self.feed.cpu_decoded - decoded_before
            bar.close()
        return True

    def time_up(self, epoch_start: float, limit_s: float) -> bool:
        """--time-limit: whether this process has trained `limit_s` seconds; under DDP the ranks agree (the
        largest wins, over the CPU control group), so they all stop at the same step."""
        if limit_s == math.inf:
            return False
        return any_rank(self.env, self.trained_seconds + time.perf_counter() - epoch_start >= limit_s)

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def end_epoch(self, validator: Validator | None, selection: tuple[str, str], progress: dict) -> dict:
        """Validate (rank 0), step per-epoch schedules, record history, write last/best, curves, JSON."""
        env, book = self.env, self.book
        book.epoch += 1
        book.step_in_epoch = 0
        record = {
            "epoch": book.epoch,
            "phase": self.phase.index,
            "step": book.step,
            "lr": self.lr(),
            "train_loss": progress["loss_sum"] / max(progress["steps"], 1),
            "images_per_s": progress["images"] / max(progress["seconds"], 1e-9),
            "train_seconds": progress["seconds"],
            "cpu_decoded": progress.get("cpu_decoded", 0),  # GPU decode: images nvJPEG could not take
        }
        book.progress = fresh_progress()  # the next epoch's; the checkpoints below are at its start
        if not self.validates(book.epoch):  # every rank decides alike: no validation, no checkpoint
            if not self.per_step and not isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.scheduler.step()  # (the plateau schedule counts validated epochs only)
            book.history.append(record)
            if env.main:
                atomic_write_json(self.out / HISTORY, book.history)
                self.log.line(epoch_line(record, selection, False))
                self.log.scalars(record)
            return record
        metrics = None
        if validator is not None:  # rank 0's; the other ranks have none
            t0 = time.perf_counter()
            metrics = validator.run(self.net)
            record["validation_seconds"] = time.perf_counter() - t0
        metrics = broadcast_from_main(env, metrics)
        value = metric_value(metrics, *selection)
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(value if value is not None else 0.0)
        elif not self.per_step:
            self.scheduler.step()
        book.metrics, book.calibration = metrics, metrics.get("calibration")
        table = validator.last_calibration if env.main and validator is not None else None
        book.calibration_table = broadcast_from_main(env, table.to_dict() if table is not None else None)
        held = validator.last_record if env.main and validator is not None else None
        book.validation_record = broadcast_from_main(env, held.to_dict() if held is not None else None)
        record.update(metrics)
        book.history.append(record)
        is_best = improves(value, book.best, selection)
        if is_best:
            book.best = best_record(selection, value, book.epoch, book.calibration)
        targets = [(LAST, "last")] + ([(BEST, "best")] if is_best else [])
        self.save_many(targets)
        if env.main:
            atomic_write_json(self.out / HISTORY, book.history)
            plot_history(book.history, self.out)
            self.log.line(epoch_line(record, selection, is_best))
            self.log.scalars(record)
        return record

    def validates(self, epoch: int) -> bool:
        """--val-every: whether the epoch just completed is validated (always the phase's last, and the last
        before the time limit)."""
        return epoch % self.cfg.val_every == 0 or epoch >= self.phase.end_epoch or self.out_of_time

    def save_many(self, targets: list[tuple[str, str]]) -> None:
        """Write each checkpoint; beside best_face_model.pth also its slim inference checkpoint
        (`export.default_outputs` names it: best_face_model_inference.pth), which the app loads the same way."""
        state = self.state(targets[0][1])
        if self.env.main:
            for name, kind in targets:
                save_checkpoint(self.out / name, replace(state, kind=kind))
                if name == BEST:
                    save_inference_checkpoint(default_outputs(str(self.out / BEST))[1], state)

    def run(self, stop: StopFlag) -> int:
        """Train to the end of the phase. Returns 0, or 130 (SIGINT) / 143 (SIGTERM) after saving a resumable
        state."""
        env, book = self.env, self.book
        validator = self._validator() if env.main else None
        selection = self._selection()
        if validator is not None:  # rank 0: the one that validates, writes the run's files and logs
            self.out.mkdir(parents=True, exist_ok=True)
            label_map = self.data.label_map()
            label_map["heldout_identities"] = list(self.heldout.identities) if self.heldout is not None else []
            atomic_write_json(self.out / LABEL_MAP, label_map)
            self.log.line(run_header(self.setup(), self.phase, book, selection, validator.describe()))
        model = self.wrap()
        self.net.train()
        started = time.perf_counter()
        try:
            while book.epoch < self.phase.end_epoch and not self.out_of_time:
                finished = self.train_epoch(model, stop, book.progress)
                if finished:
                    self.end_epoch(validator, selection, book.progress)
                if not finished or (
                    book.epoch < self.phase.end_epoch and not self.out_of_time and stop_agreed(env, stop, book.step)
                ):
                    self.save_many([(LAST, "interrupted")])
                    if env.main:
                        self.log.line(interruption_line(self.setup(), book))
                        self.log.close()
                    return stop.exit_code
        finally:
            if validator is not None:
                validator.close()
        self.save_many([(FINAL, "final")])
        if env.main:
            if self.out_of_time:
                self.log.line(time_limit_line(self.cfg, book, self.phase))
            self.log.line(run_summary(self.setup(), book, time.perf_counter() - started))
            self.log.close()
        return 0


# ----------------------------------------------------------------------------- entry points


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _execute(cfg: TrainConfig, make_trainer, stop: StopFlag | None) -> int:
    """Set up the process (group), build the Trainer with `make_trainer(cfg, env)`, run it."""
    env = setup_distributed(cfg.device, cfg.deterministic)
    own_stop = stop is None
    if stop is None:
        stop = StopFlag(announce=env.main)
    try:
        seed_everything(cfg.seed + env.rank)
        trainer = make_trainer(cfg, env)
        return trainer.run(stop)
    finally:
        if own_stop:
            stop.restore()
        if env.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def train(cfg: TrainConfig, stop: StopFlag | None = None) -> int:
    """A new run (phase 0) from the initial weights. Returns 0, or 130/143 after a resumable save."""
    return _execute(cfg, Trainer.new_run, stop)


def continue_training(
    checkpoint: str | os.PathLike, changes: dict | None = None, new_phase: bool = False, stop: StopFlag | None = None
) -> int:
    """Resume exactly (same phase, optimizer, schedule, RNG, data order) or start a new phase (fresh optimizer
    and schedule; history, best and counters continue). `changes`: settings to change, only those
    `faceid.train.config.changeable(new_phase)` allows; a new phase needs its ``lr``. ``out`` defaults to the
    checkpoint's directory."""
    ckpt = load_checkpoint(checkpoint)
    state = ckpt.training
    if state is None:
        raise FaceIDError(
            f"{checkpoint} holds no training state (it was not written by {report.command('train_model.py')})."
        )
    changes = {k: v for k, v in (changes or {}).items() if v is not None}
    refused = refused_changes(changes, new_phase)
    if refused:
        raise FaceIDError(
            f"{', '.join(refused)} can only change in a new phase; an exact resume keeps them, and a "
            f"new phase starts with a new learning rate.",
            "lr",
        )
    if new_phase and "lr" not in changes:
        raise FaceIDError("A new phase needs its learning rate.", "lr")
    phase = Phase(**state.phase)
    if not new_phase and state.epoch >= phase.end_epoch and state.step_in_epoch == 0:
        raise FaceIDError(
            f"{checkpoint} finished its phase (epoch {state.epoch} of {phase.end_epoch}); continue it "
            f"with a new phase, which starts with a new learning rate (e.g. 3e-5 with the plateau "
            f"scheduler).",
            "lr",
        )
    cfg = TrainConfig.from_dict({**state.config, "out": str(Path(checkpoint).expanduser().parent), **changes})
    return _execute(cfg, lambda c, env: (Trainer.next_phase if new_phase else Trainer.resume)(c, env, ckpt), stop)
