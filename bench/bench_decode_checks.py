#!/usr/bin/env python3
"""The GPU feed's per-batch Python before nvJPEG: per-image checks (before) vs one vectorised pass (now).

Before, the decode thread ran for every image of a batch the decode gate's header check (`image_size`), a
JPEG sniff by tensor indexing, and built the image's name for an error that almost never comes, all while
holding the GIL. Now `core.decode.check_packed_headers` walks every image's JPEG markers at once with numpy and
builds a name only for a failure. Both run here on the same packed batches of real .rec JPEGs (no decoding:
this is the host time that competes with eager kernel launches on a GPU); the ratio is printed last.

    python bench/bench_decode_checks.py --batch-size 512 --repeats 20
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from faceid.core.decode import check_packed_headers, image_size  # noqa: E402
from faceid.core.errors import run_cli  # noqa: E402
from faceid.data.datasets import open_dataset  # noqa: E402
from faceid.train.feed import PackedImages  # noqa: E402

PINS90 = Path(__file__).resolve().parents[2] / "shared" / "data" / "recordio" / "pins90_112x112" / "train.rec"


def before(packed: PackedImages, name_of) -> list[bool]:
    """The decode thread's checks as they were: per image, a name built for each."""
    data = packed.unpack()
    for i, t in enumerate(data):
        image_size(t.numpy(), name_of(i))
    return [len(t) > 2 and int(t[0]) == 0xFF and int(t[1]) == 0xD8 for t in data]


def now(packed: PackedImages, name_of) -> list[bool]:
    packed.unpack()  # nvJPEG still takes one view per image
    return check_packed_headers(packed.data.numpy(), packed.offsets.numpy(), name_of).tolist()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(PINS90), help="a .rec (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=512, help="images per batch (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=20, help="batches timed per method (default: %(default)s)")
    args = p.parse_args()
    ds = open_dataset(args.data)
    batches = []
    for b in range(args.repeats):
        idx = (np.arange(args.batch_size) + b * args.batch_size) % len(ds)
        batches.append((PackedImages.pack([ds.read_bytes(int(i)) for i in idx]), idx))
    times: dict = {"before": [], "now": []}
    for packed, idx in batches:  # alternated, so machine load hits both alike
        for name, fn in (("before", before), ("now", now)):
            t0 = time.perf_counter()
            verdict = fn(packed, lambda i, idx=idx: ds.describe(int(idx[i])))
            times[name].append(time.perf_counter() - t0)
            assert all(verdict)
    per = {k: float(np.median(v)) / args.batch_size * 1e6 for k, v in times.items()}
    print(f"{len(ds)} images in {args.data}; batches of {args.batch_size}, {args.repeats} each, median")
    for name in ("before", "now"):
        print(f"  {name:<6} {per[name]:7.2f} us per image  ({1e6 / per[name]:>12,.0f} img/s on one core)")
    print(f"  ratio  {per['before'] / per['now']:.1f}x  (before / now, same run)")
    return 0


if __name__ == "__main__":
    run_cli(main)
