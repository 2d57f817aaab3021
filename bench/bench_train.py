#!/usr/bin/env python3
"""Training throughput: the step's ceiling, the trainer's own loop end to end, and the seed's recipe, one run.

ceiling:  the default recipe's training step alone (bf16 autocast on Ampere+, fp32 on CPU; channels_last on
          CUDA; fused AdamW; the default head) on random tensors already on the device: no data at all.
trainer:  `faceid.train.trainer.Trainer.train_epoch` itself on the JPEG bytes of --data (a .rec): its DataLoader,
          nvJPEG decode one batch ahead on CUDA (cv2 in workers on CPU), augmentation and step, epoch after
          epoch; img/s is the trainer's own `images_per_s` bookkeeping (the number its epoch line prints). Eager,
          and with --compile also torch.compile'd (CUDA graphs on one GPU) as `--compile` trains.
seed:     the seed's recipe in its own loop: fp32, batch 16, NCHW, PIL decode in DataLoader workers, Adam (not
          fused), softmax head.
Every part uses a head of --head-classes classes (CASIA-WebFace's 10,572 by default; pins90's labels are
valid for it), since the head's matrix is part of the step's cost. Prints img/s per part and the ratios to the
ceiling and to the seed; --json writes them. Without CUDA it runs tiny sizes (so the script is tested): CPU
numbers say nothing about a GPU.

    python bench/bench_train.py --compile                       # GPU: batch 512, 60 timed steps each
    python bench/bench_train.py --data /data/faces_webface_112x112 --compile --json-out out.json
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faceid.core.device import describe_device, resolve_device  # noqa: E402
from faceid.core.errors import FaceIDError, run_cli  # noqa: E402
from faceid.core.fileio import atomic_write_json  # noqa: E402
from faceid.data.datasets import open_dataset  # noqa: E402
from faceid.model.network import build_backbone  # noqa: E402
from faceid.model.preprocessing import to_network_input  # noqa: E402
from faceid.train.bookkeeping import fresh_progress  # noqa: E402
from faceid.train.config import DEFAULT_HEAD, TrainConfig  # noqa: E402
from faceid.train.feed import FaceSamples, make_loader  # noqa: E402
from faceid.train.heads import TrainNet, build_head  # noqa: E402
from faceid.train.recipe import (  # noqa: E402
    StopFlag,
    autocast_context,
    build_optimizer,
    build_scheduler,
    resolve_precision,
    scaled_lr,
    setup_distributed,
)
from faceid.train.trainer import Trainer, seed_everything  # noqa: E402

PINS90 = Path(__file__).resolve().parents[2] / "shared" / "data" / "recordio" / "pins90_112x112"
CASIA_CLASSES = 10_572


class PILSamples(FaceSamples):
    """The seed's feed: PIL decode + to-tensor in the workers."""

    def __getitem__(self, j: int):
        from PIL import Image

        i = int(self.indices[j])
        img = Image.open(io.BytesIO(self.dataset.read_bytes(i))).convert("RGB")
        return torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous(), int(self.dataset.labels[i]), i


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ceiling(device: torch.device, batch: int, steps: int, warmup: int, classes: int) -> dict:
    """The default recipe's step on resident random tensors: what the GPU can do with no feed at all."""
    precision, cuda = resolve_precision("auto", device), device.type == "cuda"
    net = TrainNet(build_backbone(), build_head(DEFAULT_HEAD, classes)).to(device)
    x = torch.randn(batch, 3, 160, 160, device=device)
    if cuda:
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (batch,), device=device)
    opt = build_optimizer(TrainConfig(), net, scaled_lr("adamw", batch), device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    net.train()
    for step in range(warmup + steps):
        if step == warmup:
            _sync(device)
            t0 = time.perf_counter()
        with autocast_context(precision, device):
            logits, _ = net(x, y)
            loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    _sync(device)
    return {"img_s": batch * steps / (time.perf_counter() - t0), "batch": batch, "steps": steps, "precision": precision}


def trainer_loop(cfg: TrainConfig, classes: int, steps: int, warmup: int) -> dict:
    """The Trainer's own `train_epoch` (decode ahead, augmentation, step, its img/s bookkeeping): `warmup` steps,
    then `steps` timed ones, epoch after epoch as a run trains (no validation in between)."""
    env = setup_distributed(cfg.device)
    seed_everything(cfg.seed)
    trainer = Trainer.new_run(cfg, env)
    if classes > trainer.data.num_identities:  # the head a CASIA-sized run trains (its labels fit any wider head)
        trainer.net.head = build_head(cfg.head, classes).to(env.device)
        trainer.optimizer = build_optimizer(cfg, trainer.net, trainer.phase.lr, env.device)
        trainer.scheduler, trainer.per_step = build_scheduler(cfg, trainer.optimizer, trainer.steps_per_epoch, 1)
    model, stop, per_epoch = trainer.wrap(), StopFlag(enabled=False), trainer.steps_per_epoch
    trainer.net.train()

    def run(n: int) -> dict:
        progress, epochs = fresh_progress(), 0
        while n > 0:
            trainer.steps_per_epoch = min(per_epoch, n)
            trainer.train_epoch(model, stop, progress)
            trainer.book.epoch, trainer.book.step_in_epoch = trainer.book.epoch + 1, 0
            n, epochs = n - trainer.steps_per_epoch, epochs + 1
        return {**progress, "epochs": epochs}

    t0 = time.perf_counter()
    run(warmup)
    warm_s = time.perf_counter() - t0
    timed = run(steps)
    return {
        "img_s": timed["images"] / max(timed["seconds"], 1e-9),
        "batch": trainer.batch_size,
        "steps": steps,
        "epochs": timed["epochs"],
        "steps_per_epoch": per_epoch,
        "warmup_seconds": warm_s,
        "precision": trainer.precision,
        "decode": trainer.decode,
        "cpu_decoded": timed["cpu_decoded"],
        "compiled": cfg.compile,
        "workers": trainer.workers,
    }


def seed_recipe(data, device: torch.device, batch: int, steps: int, warmup: int, workers: int, classes: int) -> dict:
    """The seed's training loop as it was: fp32, NCHW, PIL in workers, plain Adam, softmax."""
    idx = np.arange(batch * (steps + warmup)) % len(data)
    loader = make_loader(PILSamples(data, idx, True), batch, workers, pin_memory=device.type == "cuda", drop_last=True)
    net = TrainNet(build_backbone(), build_head("softmax", classes)).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    net.train()
    for step, (x, y, _) in enumerate(loader):
        if step == warmup:
            _sync(device)
            t0 = time.perf_counter()
        x, y = to_network_input(x.to(device), data.spec), y.to(device)
        logits, _ = net(x, y)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    _sync(device)
    return {"img_s": batch * steps / (time.perf_counter() - t0), "batch": batch, "steps": steps, "precision": "fp32"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(PINS90), help="a .rec, or a directory with train.rec (default: %(default)s)")
    p.add_argument("--batch-size", type=int, help="default recipe's batch (default: 512 on CUDA, 4 on CPU)")
    p.add_argument("--seed-batch-size", type=int, help="seed recipe's batch (default: 16; 2 on CPU)")
    p.add_argument("--steps", type=int, help="timed steps per part (default: 60 on CUDA, 2 on CPU)")
    p.add_argument("--warmup", type=int, help="untimed steps first (default: 10 on CUDA, 30 with --compile; 1 on CPU)")
    p.add_argument("--workers", type=int, help="DataLoader workers (default: the trainer's; the seed's: CPUs - 1)")
    p.add_argument("--compile", action="store_true", help="also time the trainer's loop torch.compile'd (default: off)")
    p.add_argument(
        "--head-classes", type=int, default=CASIA_CLASSES, help="classes of every head (default: %(default)s)"
    )
    p.add_argument("--device", default="auto", help="auto, cuda or cpu (default: auto)")
    p.add_argument("--json-out", help="write the figures to this JSON file (default: print only)")
    args = p.parse_args()
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    big, small = args.batch_size or (512 if cuda else 4), args.seed_batch_size or (16 if cuda else 2)
    steps = args.steps or (60 if cuda else 2)
    warmup = args.warmup or ((30 if args.compile else 10) if cuda else 1)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    seed_workers = args.workers if args.workers is not None else max(1, min(15, cpus - 1))
    if not Path(args.data).exists():
        raise FaceIDError(f"Training data {args.data} not found; give a .rec or its folder with --data.", "data")
    if cuda:
        torch.backends.cudnn.benchmark = True
    print(
        f"device {describe_device(device)}; torch {torch.__version__}; data {args.data}; head {args.head_classes} "
        f"classes; {steps} timed steps after {warmup} warmup",
        flush=True,
    )
    results: dict = {"device": describe_device(device), "torch": torch.__version__, "data": args.data}
    results["ceiling"] = ceiling(device, big, steps, warmup, args.head_classes)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as out:
        base = dict(
            data=args.data,
            out=out,
            from_scratch=True,
            batch_size=big,
            workers=args.workers,
            device=str(device),
            holdout_fraction=0.0,
            val_fraction=0.0,
            bins=False,
        )
        results["trainer"] = trainer_loop(TrainConfig(**base), args.head_classes, steps, warmup)
        if args.compile:
            results["compiled"] = trainer_loop(TrainConfig(**base, compile=True), args.head_classes, steps, warmup)
    data = open_dataset(args.data)
    results["seed"] = seed_recipe(data, device, small, steps, warmup, seed_workers, args.head_classes)
    top = results["ceiling"]["img_s"]
    for name in ("ceiling", "trainer", "compiled", "seed"):
        if name in results:
            r = results[name]
            r["of_ceiling"], r["over_seed"] = r["img_s"] / top, r["img_s"] / results["seed"]["img_s"]
            extra = (
                f", decode {r['decode']}, {r['epochs']} epoch(s) of {r['steps_per_epoch']} steps"
                if "decode" in r
                else ""
            )
            print(
                f"{name:<9} {r['img_s']:>9.1f} img/s  batch {r['batch']}, {r['precision']}{extra}; "
                f"{r['of_ceiling']:.0%} of the ceiling, {r['over_seed']:.2f}x the seed",
                flush=True,
            )
    if not cuda:
        print("note: CPU run (tiny sizes) - checks that the benchmark works; the speed claims are about CUDA GPUs.")
    if args.json_out:
        atomic_write_json(Path(args.json_out), results)
    return 0


if __name__ == "__main__":
    run_cli(main)
