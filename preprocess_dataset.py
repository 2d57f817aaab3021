#!/usr/bin/env python3
"""Unpack the CASIA-WebFace RecordIO file (train.rec) into <output-dir>/<label>/<key>.jpg for training.

JPEG records are copied byte for byte (lossless, fast); other images are re-encoded as JPEG; corrupt and
truncated records are skipped and listed in <output-dir>/unpack_report.json. Re-running resumes.
"""

from __future__ import annotations

import argparse
import os

from faceid.decode import add_max_pixels_argument, apply_max_pixels
from faceid.errors import ArgumentParser, run_cli


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args() -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--rec",
        default=None,
        help="path to the .rec file (its .idx is used if beside it); overrides --input-dir "
        "(default: none, use --input-dir)",
    )
    parser.add_argument(
        "--input-dir",
        default="./datasets/casia-webface",
        help="folder holding train.rec/train.idx, searched recursively "
        "(where download_dataset.py puts them; default: %(default)s)",
    )
    parser.add_argument(
        "--output-dir",
        default="./datasets/casia-webface-images",
        help="where <label>/<key>.jpg, identities.json and unpack_report.json go (default: %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=os.cpu_count() or 1,
        help="parallel processes (default: all cores, here %(default)s)",
    )
    parser.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        help="unpack only the first N images, for a quick look (default: all)",
    )
    add_max_pixels_argument(parser)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    apply_max_pixels(args.max_pixels)
    from faceid.unpack import preprocess

    preprocess(args.rec, args.input_dir, args.output_dir, workers=args.workers, limit=args.limit)
    return 0


if __name__ == "__main__":
    run_cli(main)
