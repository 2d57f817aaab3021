"""The app's command line: faceid_app.py / ``faceid`` (subcommands, or the menu without one)."""

from __future__ import annotations

import argparse
import json

from ..core.decode import add_max_pixels_argument, apply_max_pixels
from ..core.defaults import DATA_DIR
from ..core.errors import ArgumentParser, FaceIDError
from ..core.report import add_verbosity_options, command, set_verbosity
from ..model.calibration import FAR_TARGET, FPIR_TARGET, MAX_TABLE_FAR, PROBE_SAMPLES, SAMPLES
from ..model.margin import DEFAULT_MARGIN
from ..model.options import add_model_options, check_model_options
from . import render
from .actions import run_action
from .menu import menu
from .outcome import LIVE_FRAME_LIMIT
from .session import Session
from .synthetic_check import add_synthetic_options

ACTIONS_HELP = {
    "register": "take --samples good frames of one face and store them under --name",
    "verify": "1:1 - is the face in front of the camera --name? (exit 0 match, 1 no match)",
    "identify": "1:N - who is this? top-k names with scores (exit 0 identified, 1 unknown)",
    "enroll": "register everyone of a folder-per-person tree: DIR/<name>/ holds that person's photos and clips "
    "(exit 0 all enrolled, 1 some not)",
    "list": "show everyone registered",
    "delete": "remove --name and their stored samples",
    "reenroll": "recompute every template from the stored crops with the current model",
    "check": "check the gallery's integrity (database, sample files) and rebuild its search index; this also "
    "runs by itself after a crash",
    "import-seed": "import the seed app's face_embeddings.pkl (read without running code)",
    "liveness": "run the head-turn challenge only (exit 0 passed, 1 failed)",
}


def _add_common(p: argparse.ArgumentParser, sub: bool) -> None:
    """Options accepted before or after the subcommand. On subparsers the defaults are SUPPRESSed so a value
    given before the subcommand is not overwritten by the subparser's default."""
    d = (lambda v: argparse.SUPPRESS) if sub else (lambda v: v)
    g = p.add_argument_group("source and capture")
    g.add_argument(
        "--source",
        default=d("0"),
        help="webcam index, video file, image file or folder of images (default: 0, the first webcam)",
    )
    g.add_argument(
        "--samples",
        type=int,
        default=d(SAMPLES),
        help=f"good samples to register (default: {SAMPLES}; calibration tables are measured with this many)",
    )
    g.add_argument(
        "--probe-samples",
        type=int,
        default=d(PROBE_SAMPLES),
        help=f"verify/identify: good frames averaged into the probe (default: {PROBE_SAMPLES})",
    )
    g.add_argument(
        "--max-frames",
        type=int,
        default=d(None),
        help="read at most this many frames per action "
        f"(default: the whole file; {LIVE_FRAME_LIMIT} from a camera without a window)",
    )
    g.add_argument(
        "--start-frame",
        type=int,
        default=d(0),
        help="skip this many frames of a video (or photos of a folder) first; a stream that cannot seek is decoded "
        "up to it (default: 0)",
    )
    g.add_argument(
        "--sample-gap",
        type=int,
        default=d(5),
        help="frames to skip between registered samples so they differ (default: 5)",
    )
    g.add_argument(
        "--no-preview",
        action="store_true",
        default=d(False),
        help="never open a window (headless: take the next good frames automatically)",
    )
    add_max_pixels_argument(g, default=argparse.SUPPRESS if sub else None)
    g = p.add_argument_group("model")
    add_model_options(
        g, ("model", "weights", "crop", "offline", "device", "runtime", "threads", "calibration"), onnx=True, default=d
    )
    g = p.add_argument_group("decision")
    g.add_argument(
        "--threshold",
        type=float,
        default=d(None),
        help="fixed cosine threshold for every decision "
        "(default: read from the model's calibration table at --far / --fpir; a model without a table "
        "uses its checkpoint's single threshold, else 0.6, and says it is uncalibrated)",
    )
    g.add_argument(
        "--far",
        type=float,
        default=d(FAR_TARGET),
        help=f"verify: the false-accept rate per comparison the threshold is read at (default: {FAR_TARGET:g})",
    )
    g.add_argument(
        "--fpir",
        type=float,
        default=d(FPIR_TARGET),
        help="identify: the chance that an unregistered "
        "person is accepted as someone, for the number of people registered; the threshold rises with "
        f"the gallery (default: {FPIR_TARGET:g})",
    )
    g.add_argument(
        "--margin",
        type=float,
        default=d(None),
        help="fixed score margin for every decision: verify says NO MATCH when someone else scores more than "
        "this above the claimed person, identify says AMBIGUOUS when the best two are both above the "
        "threshold and closer than this (default: the calibration table's, measured with its threshold; "
        f"without a table {DEFAULT_MARGIN:g}, and says it is uncalibrated)",
    )
    g.add_argument("--top-k", type=int, default=d(5), help="identify: how many names to list (default: 5)")
    g.add_argument(
        "--liveness",
        action="store_true",
        default=d(False),
        help="require a random head-turn challenge before verify/identify/register",
    )
    g.add_argument("--challenge-prompts", type=int, default=d(2), help="turns asked for by --liveness (default: 2)")
    add_synthetic_options(p.add_argument_group("synthetic faces"), d)
    g = p.add_argument_group("storage and output")
    g.add_argument("--data-dir", default=d(str(DATA_DIR)), help=f"gallery folder (default: ./{DATA_DIR})")
    g.add_argument("--json", action="store_true", default=d(False), help="print one JSON object on stdout")
    add_verbosity_options(g, default=d(False))


def _add_all_faces(p: argparse.ArgumentParser) -> None:
    """identify's options for every face of an image, a folder or a video (faceid.app.batch)."""
    g = p.add_argument_group("every face (identify --all-faces)")
    g.add_argument(
        "--all-faces",
        action="store_true",
        help="decide every face at the source, not one probe: each face of an image, of every photo of a folder, "
        "or each person followed through a video, gets its own row (box, detector score, name or null, score, "
        "decision); faces below the quality gate are listed as low_quality (default: off)",
    )
    g.add_argument(
        "--csv", metavar="FILE", help="also write the rows to this new CSV file as they come (default: none)"
    )
    g.add_argument(
        "--jsonl", metavar="FILE", help="also write the rows to this new JSON Lines file as they come (default: none)"
    )
    g.add_argument(
        "--annotate",
        metavar="OUT",
        help="also draw every face's box and decision (green identified, orange ambiguous, red unknown, grey low "
        "quality): for an image a copy at OUT, for a folder copies in the new folder OUT, for a video a new "
        ".mp4 or .avi at OUT (default: none)",
    )
    g.add_argument(
        "--per-frame",
        action="store_true",
        help="a video: one row per face per analysed frame (with its track's id) instead of one per track "
        "(default: off)",
    )
    g.add_argument(
        "--every",
        type=int,
        default=1,
        metavar="N",
        help="a video: analyse every N-th frame (default: 1, every frame)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=command("faceid_app.py"),
        description="Register faces and recognise them. Without a subcommand: an interactive menu read from stdin.",
        epilog="Exit codes: 0 match/success, 1 no match/ambiguous/rejected, 2 error, 130 interrupted.",
    )
    _add_common(parser, sub=False)
    subs = parser.add_subparsers(dest="action", metavar="ACTION")
    for action, text in ACTIONS_HELP.items():
        sp = subs.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        if action in ("register", "verify", "delete"):
            sp.add_argument("--name", required=True, help="the person's name")
        if action == "register":
            sp.add_argument("--replace", action="store_true", help="overwrite someone already registered")
        if action == "import-seed":
            sp.add_argument(
                "--replace",
                action="store_true",
                help="overwrite people already registered under the same names (default: refuse)",
            )
        if action == "import-seed":
            sp.add_argument("--pickle", required=True, help="the seed's face_embeddings.pkl")
        if action == "identify":
            _add_all_faces(sp)
        if action == "enroll":
            sp.add_argument("folder", metavar="DIR", help="one subfolder per person, named after them")
            sp.add_argument(
                "--replace", action="store_true", help="register again people already registered (default: skip them)"
            )
        _add_common(sp, sub=True)
    return parser


def _check_args(args: argparse.Namespace) -> None:
    if min(args.samples, args.probe_samples, args.top_k) < 1 or min(args.sample_gap, args.start_frame) < 0:
        raise FaceIDError(
            "--samples, --probe-samples and --top-k must be at least 1; --sample-gap and --start-frame at least 0."
        )
    if args.max_frames is not None and args.max_frames < 1:
        raise FaceIDError("--max-frames must be at least 1.")
    _check_all_faces(args)
    check_model_options(args)  # before the gallery or the source is touched
    if args.threshold is not None and not -1.0 <= args.threshold <= 1.0:
        raise FaceIDError("--threshold is a cosine similarity: give a value between -1 and 1.")
    if args.margin is not None and not 0.0 <= args.margin <= 2.0:
        raise FaceIDError("--margin is a difference of two cosines: give a value between 0 and 2.")
    if not (0 < args.far <= MAX_TABLE_FAR and 0 < args.fpir <= MAX_TABLE_FAR):
        raise FaceIDError(f"--far and --fpir are rates: give values above 0 and at most {MAX_TABLE_FAR:g}.")


def _check_all_faces(args: argparse.Namespace) -> None:
    if args.action != "identify":
        return
    needs = [flag for flag, given in (("--csv", args.csv), ("--jsonl", args.jsonl), ("--per-frame", args.per_frame),
             ("--every", args.every != 1), ("--annotate", args.annotate)) if given]  # fmt: skip
    if needs and not args.all_faces:
        raise FaceIDError(f"{needs[0]} needs --all-faces (it writes one row per face).")
    if args.every < 1:
        raise FaceIDError("--every must be at least 1.")
    if args.all_faces and args.liveness:
        raise FaceIDError("--liveness challenges one person in front of a camera; it does not go with --all-faces.")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, parsed and checked (a bad value is a `FaceIDError` before anything is opened)."""
    args = build_parser().parse_args(argv)
    _check_args(args)
    return args


def main(argv: list[str] | None = None) -> int:
    return run(Session(parse_args(argv)))


def run(session: Session) -> int:
    """The session's command: the menu without an action, else the one action, printed as text or JSON."""
    args = session.args
    set_verbosity(args.quiet, args.verbose)
    apply_max_pixels(args.max_pixels)
    if args.action is None:
        return menu(session)
    try:
        outcome = render.outcome(run_action(session, args.action, args))
    except FaceIDError as err:
        err.details["action"] = args.action  # run_cli prints the error (and the JSON object under --json)
        raise
    finally:
        session.close()
    if args.json:
        print(json.dumps({"ok": True, **outcome.data}, ensure_ascii=False))
    else:
        print("\n".join(outcome.lines))
    return outcome.code
