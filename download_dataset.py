#!/usr/bin/env python3
"""Download CASIA-WebFace (insightface RecordIO: train.rec, train.idx, *.bin) from Kaggle and verify it.

Needs Kaggle credentials: KAGGLE_USERNAME and KAGGLE_KEY, or ~/.kaggle/kaggle.json (chmod 600; the folder can
be moved with KAGGLE_CONFIG_DIR). The result lands in <output-dir>/<dataset name>/, e.g. ./datasets/casia-webface/,
which is what preprocess_dataset.py reads by default. A verified dataset is not downloaded again.
"""

from __future__ import annotations

import argparse

from faceid.errors import ArgumentParser, run_cli


def parse_args() -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    from faceid import kaggle_fetch

    target, check, downloaded = kaggle_fetch.fetch_dataset(
        args.dataset, args.output_dir, force=args.force, keep_zip=args.keep_zip
    )
    print(kaggle_fetch.describe(args.dataset, target, check, downloaded))
    return 0


if __name__ == "__main__":
    run_cli(main)
