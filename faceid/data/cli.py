"""Command lines of the data stage: download_dataset.py (CASIA-WebFace from Kaggle) and preprocess_dataset.py
(train.rec -> a JPG tree). The texts below are what their ``--help`` prints."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..core.decode import add_max_pixels_argument, apply_max_pixels
from ..core.errors import ArgumentParser, positive_int
from ..core.report import add_verbosity_options, set_verbosity

DOWNLOAD_HELP = """Download CASIA-WebFace (insightface RecordIO: train.rec, train.idx, *.bin) from Kaggle and verify it.

Needs Kaggle credentials: KAGGLE_USERNAME and KAGGLE_KEY, or ~/.kaggle/kaggle.json (chmod 600; the folder can
be moved with KAGGLE_CONFIG_DIR). The result lands in <output-dir>/<dataset name>/, e.g. ./datasets/casia-webface/,
which is what preprocess_dataset.py reads by default. A verified dataset is not downloaded again.
"""

UNPACK_HELP = """Unpack the CASIA-WebFace RecordIO file (train.rec) into <output-dir>/<label>/<key>.jpg for training.

JPEG records are copied byte for byte (lossless, fast); other images are re-encoded as JPEG; corrupt and
truncated records are skipped and listed in <output-dir>/unpack_report.json. Re-running resumes.
"""


def download_parser() -> ArgumentParser:
    parser = ArgumentParser(description=DOWNLOAD_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--dataset",
        default="debarghamitraroy/casia-webface",
        help="Kaggle dataset slug owner/name (default: %(default)s)",
    )
    parser.add_argument(
        "--output-dir",
        default="./datasets",
        help="parent folder; the dataset goes into <output-dir>/<name> (default: %(default)s)",
    )
    parser.add_argument(
        "--force", action="store_true", help="download and extract again even if a verified copy exists (default: off)"
    )
    parser.add_argument(
        "--keep-zip",
        action="store_true",
        help="keep the downloaded zip after extracting it (default: off, it is deleted)",
    )
    add_verbosity_options(parser)
    return parser


def download_main(argv: list[str] | None = None) -> int:
    args = download_parser().parse_args(argv)
    set_verbosity(args.quiet, args.verbose)
    from . import kaggle

    target, check, downloaded = kaggle.fetch_dataset(
        args.dataset, args.output_dir, force=args.force, keep_zip=args.keep_zip
    )
    print(kaggle.describe(args.dataset, target, check, downloaded))
    return 0


def unpack_parser() -> ArgumentParser:
    parser = ArgumentParser(description=UNPACK_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    add_verbosity_options(parser)
    return parser


def unpack_main(argv: list[str] | None = None) -> int:
    args = unpack_parser().parse_args(argv)
    set_verbosity(args.quiet, args.verbose)
    apply_max_pixels(args.max_pixels)
    from .unpack import REPORT_NAME, preprocess

    summary = preprocess(args.rec, args.input_dir, args.output_dir, workers=args.workers, limit=args.limit)
    print(f"unpacked {summary.rec_path} ({summary.layout} layout): {summary.describe()}")
    if summary.index_source == "scan":
        print(f"note: the index was not used ({summary.index_note}); record offsets came from a scan of the file")
    if summary.corrupt or summary.truncated:
        print(f"skipped records are listed in {Path(args.output_dir) / REPORT_NAME}")
    return 0
