"""Command lines of train_gan.py, generate_faces.py and train_detector.py (run under `errors.run_cli`)."""

from __future__ import annotations

import argparse

from ..core.errors import ArgumentParser, positive_int
from ..core.report import add_verbosity_options, set_verbosity
from .detector_config import DetectorConfig
from .gan_config import GanConfig
from .settings import add_flags, build

RESUME_MAY_CHANGE = ("out", "device", "workers", "data")


def gan_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        description="Train a DCGAN face generator on the recogniser's face data. Each epoch writes a fixed-noise "
        "sample grid (samples_epoch_NNN.png), the loss and quality curves (curves_gan.png), history.json, "
        "train.log and gan_last.pth; gan_final.pth at the end. Ctrl-C saves a resumable gan_last.pth.",
    )
    p.add_argument(
        "--resume",
        metavar="CHECKPOINT",
        help="continue a run exactly from its gan_last.pth (only --epochs, --out, --device, --workers, --data may "
        "change) (default: a new run)",
    )
    add_flags(p, GanConfig)
    add_verbosity_options(p)
    return p


def train_gan_main(argv: list[str] | None = None) -> int:
    from ..core.errors import FaceIDError
    from .gan_train import GanRun

    given = vars(gan_parser().parse_args(argv))
    set_verbosity(given.pop("quiet", False), given.pop("verbose", False))
    resume = given.pop("resume", None)
    if resume is None:
        return GanRun(build(GanConfig, given, "the command line")).run()
    epochs = given.pop("epochs", None)
    refused = sorted(set(given) - set(RESUME_MAY_CHANGE))
    if refused:
        raise FaceIDError(
            f"An exact resume keeps the run's recipe; {', '.join('--' + n.replace('_', '-') for n in refused)} "
            f"cannot change (start a new run instead)."
        )
    return GanRun.resume(resume, epochs, **given).run()


def generate_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        description="Write generated faces from a train_gan.py checkpoint: one PNG per face (face_SEED.png, the "
        "same seed always gives the same face), grid.png and manifest.json (seeds, files, sha256, checkpoint).",
    )
    p.add_argument("checkpoint", help="gan_final.pth or gan_last.pth written by train_gan.py")
    p.add_argument("--count", type=positive_int, default=64, help="faces to write (default: %(default)s)")
    p.add_argument("--out", required=True, help="folder for the PNGs, grid.png and manifest.json (required)")
    p.add_argument("--seed", type=int, default=0, help="first seed; face k uses seed + k (default: %(default)s)")
    p.add_argument(
        "--upscale",
        type=int,
        choices=(1, 2, 4),
        default=1,
        help="write each face enlarged this many times (bicubic), e.g. to hand one to the app as a photo "
        "(default: %(default)s)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    add_verbosity_options(p)
    return p


def generate_main(argv: list[str] | None = None) -> int:
    from .generate import generate_faces

    args = generate_parser().parse_args(argv)
    set_verbosity(args.quiet, args.verbose)
    generate_faces(args.checkpoint, args.count, args.out, args.seed, args.upscale, args.device)
    return 0


def detector_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        description="Train the real-vs-synthetic face detector: InceptionResnetV1 with a one-logit head, real faces "
        "from the recogniser's data, synthetic ones from generate_faces.py output or any folder; validation on "
        "held-out identities and sources. Writes detector_best.pth (best validation AUC, with the threshold at "
        "--frr: what the app's --synthetic-detector takes), detector_last.pth (resumable), detector_final.pth, "
        "history.json, curves_detector.png and train.log.",
    )
    p.add_argument(
        "--resume",
        metavar="CHECKPOINT",
        help="continue a run exactly from its detector_last.pth (only --epochs, --out, --device, --workers may "
        "change) (default: a new run)",
    )
    add_flags(p, DetectorConfig)
    add_verbosity_options(p)
    return p


def train_detector_main(argv: list[str] | None = None) -> int:
    from ..core.errors import FaceIDError
    from .detector_train import DetectorRun

    given = vars(detector_parser().parse_args(argv))
    set_verbosity(given.pop("quiet", False), given.pop("verbose", False))
    resume = given.pop("resume", None)
    if resume is None:
        return DetectorRun(build(DetectorConfig, given, "the command line")).run()
    epochs = given.pop("epochs", None)
    refused = sorted(set(given) - {"out", "device", "workers"})
    if refused:
        raise FaceIDError(
            f"An exact resume keeps the run's recipe; {', '.join('--' + n.replace('_', '-') for n in refused)} "
            f"cannot change (start a new run instead)."
        )
    return DetectorRun.resume(resume, epochs, **given).run()
