#!/usr/bin/env python3
"""How fast the GPU-decode feed delivers encoded bytes: one tensor per image (before) vs packed batches (now).

Runs the trainer's own loader (`faceid.train.feed.make_loader` over `FaceSamples(decode_on_cpu=False)` with the
trainer's `EpochSampler`) on a .rec and consumes each batch as the main process does before nvJPEG (the
list of per-image byte tensors). "before" differs only in its collate: the per-image byte tensors crossing
the process boundary one by one, as the feed did until packed batches. No decoding happens, so this is
the ceiling the feed puts on a GPU run; it must stay far above the GPU's ~12,000 img/s.

    python bench/bench_feed.py --data ../shared/data/recordio/pins90_112x112/train.rec --batch-size 512
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faceid.core.errors import FaceIDError, run_cli  # noqa: E402
from faceid.data.datasets import open_dataset  # noqa: E402
from faceid.train.feed import EpochSampler, FaceSamples, make_loader  # noqa: E402


class PerImageSamples(FaceSamples):
    """The feed before packing: every image's bytes as its own tensor, the batch a list of them."""

    def __getitem__(self, j: int):
        data, label, i = super().__getitem__(j)
        return torch.frombuffer(bytearray(data), dtype=torch.uint8), label, i


def collate_per_image(batch):
    data, labels, idx = zip(*batch)
    return list(data), torch.tensor(labels, dtype=torch.int64), torch.tensor(idx, dtype=torch.int64)


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the loader's workers once shut down)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def measure(name: str, dataset, batch: int, workers: int, batches: int) -> float:
    """Images per second over `batches` batches after one warm-up batch (workers started, files cached).

    Also prints CPU time per image (main process + workers, warm-up and worker shutdown included), which
    other jobs on the machine do not inflate: 2 / (CPU s per image) bounds what 2 idle cores could deliver."""
    cpu0 = cpu_seconds()
    packed = name == "packed"
    samples = (FaceSamples if packed else PerImageSamples)(dataset, None, decode_on_cpu=False)
    sampler = EpochSampler(len(samples), batch)
    loader = make_loader(samples, batch, workers, sampler)
    if not packed:
        loader.collate_fn = collate_per_image
    done, nbytes, t0, epoch = 0, 0, None, 0
    while done < batches:
        sampler.set_epoch(epoch)
        for b in loader:
            images = b[0].unpack() if packed else b[0]  # what the main process hands to nvJPEG
            if t0 is None:
                t0 = time.perf_counter()  # after the first batch: workers are up
                continue
            nbytes += sum(len(t) for t in images)
            done += 1
            if done == batches:
                break
        epoch += 1
    seconds = time.perf_counter() - t0
    rate = done * batch / seconds
    del loader, b  # shut the workers down so their CPU time is counted
    gc.collect()
    cpu_per_image = (cpu_seconds() - cpu0) / ((done + 1) * batch)
    print(
        f"{name:<9} workers {workers}: {rate:>9,.0f} img/s  ({nbytes / seconds / 1e6:.0f} MB/s, "
        f"{seconds / done * 1000:.1f} ms per batch of {batch}); {cpu_per_image * 1e6:.1f} CPU-us per image, "
        f"{2 / cpu_per_image:,.0f} img/s on 2 idle cores",
        flush=True,
    )
    return rate


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data",
        default=str(Path(__file__).resolve().parents[2] / "shared/data/recordio/pins90_112x112/train.rec"),
        help="a .rec, a directory with train.rec, or a folder tree (default: %(default)s)",
    )
    p.add_argument("--batch-size", type=int, default=512, help="images per batch (default: %(default)s)")
    p.add_argument("--batches", type=int, default=40, help="timed batches per measurement (default: %(default)s)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to try (default: 1 2)")
    args = p.parse_args()
    if args.batch_size < 1 or args.batches < 1 or min(args.workers) < 1:
        raise FaceIDError("--batch-size, --batches and --workers must be at least 1.")
    dataset = open_dataset(args.data)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"data {args.data}: {len(dataset)} images; batch {args.batch_size}; {cpus} CPU cores; "
        f"{args.batches} timed batches each",
        flush=True,
    )
    for workers in args.workers:
        before = measure("per-image", dataset, args.batch_size, workers, args.batches)
        after = measure("packed", dataset, args.batch_size, workers, args.batches)
        print(f"ratio     workers {workers}: {after / before:.1f}x  (packed / per-image, same run)", flush=True)
    return 0


if __name__ == "__main__":
    run_cli(main)
