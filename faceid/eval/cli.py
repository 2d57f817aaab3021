"""Evaluate a face-recognition model with the app's own pipeline: 1:1 pairs, 1:N identification, calibration.

Examples:
  python evaluate_model.py --pairs ../shared/data/lfw/pairsDevTest.txt --images ../shared/data/lfw/images
  python evaluate_model.py --bin ../shared/data/recordio/pins90_112x112/lfw_dev.bin --weights W.pt --crop aligned5
  python evaluate_model.py --open-set --images ../shared/data/lfw/images --weights W.pt --crop aligned5
  python evaluate_model.py --calibrate HELD_OUT_PEOPLE/ --weights W.pt --crop aligned5 --calibration-out W.cal.json

Pairs: accuracy (mean ± standard error over the folds; per-fold accuracies and thresholds and every pair's
score in the JSON), ROC AUC, EER, TAR@FAR 1e-3 / 1e-2, detector misses, images/s; writes
<out-dir>/<stem>_report.json and <stem>_roc.png. See faceid/eval/evaluator.py for the pipeline.
--open-set: people with >= 2 images enrol, people with one image are strangers: FNIR at FPIR 1e-3 / 1e-2 and
rank-1 per gallery size, the app's thresholds at each size, a DET plot (faceid/eval/open_set.py).
--calibrate: a score->FAR table of the app's comparison on held-out people, for weights without one; the app
and this evaluator read it with --calibration. Benchmark folders (LFW) are refused.
"""

from __future__ import annotations

import argparse
import json

from ..core.decode import add_max_pixels_argument, apply_max_pixels
from ..core.defaults import CALIBRATION_FILE, EVAL_CACHE, EVAL_DIR
from ..core.errors import ArgumentParser, FaceIDError
from ..core.report import add_verbosity_options, set_verbosity
from ..model.calibration import FPIR_TARGET, MAX_TABLE_FAR, SAMPLES
from ..model.options import add_model_options, check_model_options
from .identification_metrics import GALLERY_SIZES
from .verification_run import run_evaluation


def parse_args(argv=None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = p.add_argument_group("pairs (give --pairs with --images, or --bin)")
    data.add_argument(
        "--pairs",
        help="LFW-format pairs file: View 1 header 'N' (pairsDevTest.txt) or View 2 header '10<TAB>300' (pairs.txt).",
    )
    data.add_argument("--images", help="image root holding <Name>/<Name>_NNNN.jpg (e.g. ../shared/data/lfw/images).")
    data.add_argument(
        "--bin",
        help="insightface verification file (lfw.bin, cfp_fp.bin, ...): pre-aligned "
        "112x112 faces, so detection is skipped.",
    )
    data.add_argument(
        "--open-set",
        action="store_true",
        help="1:N mode on --images (<Name>/*.jpg): people with >= 2 images enrol and give mated probes, "
        "the others are non-mated probes (default: off, pairs mode)",
    )
    data.add_argument(
        "--calibrate",
        metavar="FOLDER",
        help="calibration mode: held-out people as FOLDER/<Name>/*.jpg (never benchmark data) -> a "
        "score->FAR table written to --calibration-out",
    )
    data.add_argument(
        "--limit",
        type=int,
        default=None,
        help="use only the first ceil(N/2) same and floor(N/2) different pairs (default: all).",
    )
    mdl = p.add_argument_group("model (as the app chooses it)")
    add_model_options(mdl, ("model", "weights", "crop", "calibration", "device", "threads"), threads=None)
    mdl.add_argument(
        "--no-flip",
        action="store_true",
        help="embed the image only (default: L2-normalised sum of the image's and its mirror's outputs).",
    )
    one = p.add_argument_group("1:N and calibration")
    one.add_argument(
        "--gallery-samples",
        type=int,
        default=SAMPLES,
        help="--open-set: images averaged into each template, at most (one image is always left as a "
        f"mated probe) (default: {SAMPLES}, as the app registers)",
    )
    one.add_argument(
        "--gallery-sizes",
        default=",".join(map(str, GALLERY_SIZES)),
        help=f"--open-set: gallery sizes to report besides 'all' (default: {','.join(map(str, GALLERY_SIZES))})",
    )
    one.add_argument(
        "--draws",
        type=int,
        default=5,
        help="--open-set: random galleries per size below 'all', searches pooled (default: 5)",
    )
    one.add_argument(
        "--distractors",
        type=int,
        default=0,
        help="--open-set: this many of the one-image people (seeded choice) enrol with their image and have "
        "no probe, so galleries can be larger than the people with a mate; the rest stay strangers (default: 0)",
    )
    one.add_argument(
        "--fpir",
        type=float,
        default=FPIR_TARGET,
        help=f"--open-set: the FPIR the app's own rule is measured at, as the app's --fpir (default: {FPIR_TARGET:g})",
    )
    one.add_argument(
        "--calibration-out",
        default=str(CALIBRATION_FILE),
        help=f"--calibrate: where the table goes (default: {CALIBRATION_FILE})",
    )
    one.add_argument(
        "--tune-on-benchmark",
        action="store_true",
        help="--calibrate: allow a benchmark folder (LFW); the table is stamped as benchmark data and "
        "the app says so (default: off, which refuses it)",
    )
    run = p.add_argument_group("run")
    run.add_argument(
        "--folds",
        type=int,
        default=10,
        help="folds for accuracy, each fold's threshold chosen on the others (default: 10; a whole "
        "View 2 file keeps its own folds).",
    )
    add_max_pixels_argument(run)
    run.add_argument("--batch-size", type=int, default=64, help="images per detection/embedding batch (default: 64).")
    run.add_argument(
        "--cache",
        default=str(EVAL_CACHE),
        help=f"SQLite embedding cache keyed by image file + model fingerprint + flip (default: "
        f"{EVAL_CACHE}); a second run over the same images costs nothing.",
    )
    run.add_argument("--no-cache", action="store_true", help="neither read nor write the cache.")
    out = p.add_argument_group("output")
    out.add_argument(
        "--out-dir",
        default=str(EVAL_DIR),
        help=f"folder for <stem>_report.json and <stem>_roc.png (default: {EVAL_DIR}).",
    )
    out.add_argument("--json", action="store_true", help="print the full JSON report instead of the summary.")
    add_verbosity_options(out)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_model_options(args)
    set_verbosity(args.quiet, args.verbose)
    apply_max_pixels(args.max_pixels)
    if args.open_set or args.calibrate:
        report, summary = people_mode(args)
        print(json.dumps(report, indent=2) if args.json else summary)
        return 0
    report = run_evaluation(
        pairs=args.pairs,
        images=args.images,
        bin_path=args.bin,
        model=args.model,
        weights=args.weights,
        crop=args.crop,
        flip=not args.no_flip,
        folds=args.folds,
        batch_size=args.batch_size,
        device=args.device,
        cache_path=None if args.no_cache else args.cache,
        out_dir=args.out_dir,
        limit=args.limit,
        threads=args.threads,
        progress=not args.quiet,
    )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        from .report import format_summary

        print(format_summary(report))
    return 0


def people_mode(args: argparse.Namespace) -> tuple[dict, str]:
    """--calibrate and --open-set: check the flags, load the model, run; (report, printed summary)."""
    from .calibrate import check_not_benchmark, format_calibration, run_calibration
    from .embed_cache import EmbedCache
    from .evaluator import load_faceid_backend
    from .open_set import format_identification, run_identification

    if bool(args.calibrate) == bool(args.images):
        raise FaceIDError(
            "Calibration takes its own folder and the open-set evaluation an image folder: give one of them.",
            "calibrate",
            "images",
        )
    try:
        sizes = tuple(int(v) for v in args.gallery_sizes.split(",") if v.strip())
    except ValueError:
        raise FaceIDError(
            f"Gallery sizes must be whole numbers separated by commas, got {args.gallery_sizes!r}.", "gallery_sizes"
        ) from None
    if min(args.gallery_samples, args.draws, args.batch_size, *sizes) < 1:
        raise FaceIDError(
            "The gallery samples, draws, batch size and every gallery size must be at least 1.",
            "gallery_samples",
            "draws",
            "batch_size",
            "gallery_sizes",
        )
    if args.distractors < 0 or not 0 < args.fpir <= MAX_TABLE_FAR:
        raise FaceIDError(
            f"--distractors must be at least 0 and --fpir a rate above 0 and at most {MAX_TABLE_FAR:g}.",
            "distractors",
            "fpir",
        )
    if args.calibrate:
        check_not_benchmark(args.calibrate, args.tune_on_benchmark)  # before the model loads: refusing costs nothing
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    backend = load_faceid_backend(
        args.model, args.weights, args.crop, args.device, not args.no_flip, args.batch_size, args.calibration
    )
    cache_path = None if args.no_cache else args.cache
    cache = EmbedCache(cache_path) if cache_path else None
    progress = not args.quiet
    try:
        if args.calibrate:
            summary = run_calibration(
                backend, args.calibrate, args.calibration_out, cache, args.tune_on_benchmark, args.batch_size, progress
            )
            return summary, format_calibration(summary)
        report = run_identification(
            [backend],
            args.images,
            args.out_dir,
            cache,
            args.gallery_samples,
            sizes,
            args.draws,
            args.batch_size,
            progress,
            distractors=args.distractors,
            fpir=args.fpir,
        )
        return report, format_identification(report)
    finally:
        if cache:
            cache.close()
