#!/usr/bin/env python3
"""Training throughput, end to end from JPEG bytes: the seed's recipe vs this project's default, same run.

seed:    fp32, batch 16, NCHW, PIL decode in DataLoader workers, Adam (not fused), softmax head.
default: bf16 autocast on Ampere+ / fp16 + GradScaler on older GPUs (fp32 on CPU), channels_last (CUDA),
         large batch, nvJPEG batch decode on CUDA (cv2 in workers on CPU), fused AdamW (CUDA), default head,
         optional torch.compile.
Both read the same encoded images (a .rec / folder tree given with --data, else synthetic 112x112 JPEG
faces held in memory) and run the real training step (forward, loss, backward, optimizer step).
Prints images/s for each and the ratio last. Without CUDA it runs a tiny version (so the script is tested);
CPU numbers say nothing about a GPU.

    python bench/bench_train.py                       # GPU: batch 512, 60 timed steps
    python bench/bench_train.py --data /data/faces_webface_112x112 --compile
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faceid.core.errors import run_cli  # noqa: E402
from faceid.data.datasets import open_dataset  # noqa: E402
from faceid.model.network import build_backbone  # noqa: E402
from faceid.model.preprocessing import ALIGNED_SPEC  # noqa: E402
from faceid.train.config import DEFAULT_HEAD, TrainConfig  # noqa: E402
from faceid.train.feed import BatchFeed, FaceSamples, make_loader  # noqa: E402
from faceid.train.heads import TrainNet, build_head  # noqa: E402
from faceid.train.recipe import autocast_context, build_optimizer, resolve_precision, scaled_lr  # noqa: E402


class SyntheticFaces:
    """`pool` encoded 112x112 JPEGs of `classes` identities, indexed cyclically up to `length` samples."""

    def __init__(self, length: int, pool: int = 1024, classes: int = 100):
        import cv2

        rng = np.random.default_rng(0)
        self.images = []
        for _ in range(pool):
            img = np.clip(rng.normal(128, 40, (112, 112, 3)), 0, 255).astype(np.uint8)
            cv2.circle(img, (56, 56), 40, tuple(int(v) for v in rng.integers(0, 255, 3)), -1)
            self.images.append(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
        self.labels = np.arange(length) % classes
        self.spec, self.num_identities, self.pool = ALIGNED_SPEC, classes, pool

    def __len__(self) -> int:
        return len(self.labels)

    def read_bytes(self, i: int) -> bytes:
        return self.images[i % self.pool]

    def describe(self, i: int) -> str:
        return f"synthetic image {i}"


class PILSamples(FaceSamples):
    """The seed's feed: PIL decode + to-tensor in the workers."""

    def __getitem__(self, j: int):
        from PIL import Image

        i = int(self.indices[j])
        img = Image.open(io.BytesIO(self.dataset.read_bytes(i))).convert("RGB")
        return torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous(), int(self.dataset.labels[i]), i


def measure(
    name: str,
    data,
    device: torch.device,
    batch: int,
    steps: int,
    warmup: int,
    workers: int,
    precision: str,
    channels_last: bool,
    decode: str,
    optimizer: str,
    head: str,
    compile_: bool,
    fused: bool,
) -> dict:
    """Run warmup + timed training steps; images/s over the timed steps (synchronised at both ends)."""
    n = batch * (steps + warmup)
    idx = np.arange(n) % len(data)
    samples = PILSamples(data, idx, True) if decode == "pil" else FaceSamples(data, idx, decode_on_cpu=decode != "gpu")
    loader = make_loader(samples, batch, workers, pin_memory=device.type == "cuda", drop_last=True)
    feed = BatchFeed(data.spec, device, "gpu" if decode == "gpu" else "cpu", channels_last)
    net = TrainNet(build_backbone(), build_head(head, data.num_identities)).to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    cfg = TrainConfig(optimizer=optimizer)
    lr = scaled_lr(optimizer, batch)
    opt = (
        build_optimizer(cfg, net, lr, device)
        if fused
        else torch.optim.Adam(net.parameters(), lr=lr)
        if optimizer == "adam"
        else torch.optim.AdamW(net.parameters(), lr=lr)
    )
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    model = torch.compile(net, mode="reduce-overhead" if device.type == "cuda" else "default") if compile_ else net
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    net.train()
    t0, done = None, 0
    for step, batch_data in enumerate(loader):
        if step == warmup:
            sync()
            t0 = time.perf_counter()
        x, y = feed(batch_data, augment=True)
        with autocast_context(precision, device):
            logits, _ = model(x, y)
            loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if step >= warmup:
            done += len(y)
    sync()
    seconds = time.perf_counter() - t0
    result = {
        "name": name,
        "img_s": done / seconds,
        "batch": batch,
        "steps": steps,
        "precision": precision,
        "layout": "channels_last" if channels_last else "NCHW",
        "decode": decode,
        "optimizer": optimizer,
        "head": head,
        "loss": float(loss.detach()),
    }
    print(
        f"{name:<8} {result['img_s']:>9.1f} img/s  batch {batch}, {precision}, {result['layout']}, decode {decode}, "
        f"{optimizer}{' fused' if fused and device.type == 'cuda' else ''}, {head}{', compiled' if compile_ else ''}",
        flush=True,
    )
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="a .rec, a directory with train.rec, or a folder tree (default: synthetic JPEGs)")
    p.add_argument("--batch-size", type=int, help="default recipe's batch (default: 512 on CUDA, 8 on CPU)")
    p.add_argument("--seed-batch-size", type=int, default=None, help="seed recipe's batch (default: 16; 4 on CPU)")
    p.add_argument("--steps", type=int, help="timed steps per recipe (default: 60 on CUDA, 2 on CPU)")
    p.add_argument(
        "--warmup", type=int, help="untimed steps first (default: 10 on CUDA, 1 on CPU; more with --compile)"
    )
    p.add_argument("--workers", type=int, help="DataLoader workers (default: CPUs - 1, up to 15)")
    p.add_argument("--compile", action="store_true", help="torch.compile the default recipe (default: off)")
    p.add_argument("--device", default="auto", help="auto, cuda or cpu (default: auto)")
    args = p.parse_args()
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    big = args.batch_size or (512 if cuda else 8)
    small = args.seed_batch_size or (16 if cuda else 4)
    steps = args.steps or (60 if cuda else 2)
    warmup = args.warmup or ((30 if args.compile else 10) if cuda else 1)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = args.workers if args.workers is not None else max(1, min(15, cpus - 1))
    n = big * (steps + warmup)
    data = open_dataset(args.data) if args.data else SyntheticFaces(n, pool=min(n, 2048))
    name = torch.cuda.get_device_name(device) if cuda else f"CPU ({cpus} cores)"
    print(
        f"device {name}; data {args.data or 'synthetic 112x112 JPEGs in memory'}; workers {workers}; "
        f"{steps} timed steps after {warmup} warmup",
        flush=True,
    )
    seed = measure(
        "seed", data, device, small, steps, warmup, workers, "fp32", False, "pil", "adam", "softmax", False, False
    )
    ours = measure(
        "default",
        data,
        device,
        big,
        steps,
        warmup,
        workers,
        resolve_precision("auto", device),
        cuda,
        "gpu" if cuda else "cpu",
        "adamw",
        DEFAULT_HEAD,
        args.compile,
        True,
    )
    print(f"ratio    {ours['img_s'] / seed['img_s']:.2f}x  (default / seed images per second)")
    if not cuda:
        print("note: CPU run (tiny sizes) - checks that the benchmark works; the speed claims are about CUDA GPUs.")
    return 0


if __name__ == "__main__":
    run_cli(main)
