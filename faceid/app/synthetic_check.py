"""The app's synthetic-face check: --synthetic-detector, --allow-synthetic, --reject-synthetic.

With a detector (train_detector.py's ``detector_best.pth``; or ``$FACEID_SYNTHETIC_DETECTOR``), every sample
that passes the quality gate is also scored by it (`faceid.synthetic.detector_model`: the detector's own crop
of the same detection; high = generated). A face is flagged when its score reaches the detector's threshold,
which train_detector.py set at a false-reject rate on real people it never trained on.

- register refuses a flagged face (exit 1: an answer, like a failed liveness challenge), printing the score
  and the threshold; ``--allow-synthetic`` registers it anyway and says so;
- verify and identify report the probe's score beside the decision, and with ``--reject-synthetic`` refuse a
  flagged probe (exit 1) instead of deciding;
- the JSON of each carries ``synthetic``: {score, threshold, flagged, detector}.

The score of several samples is the highest (one flagged frame is enough to doubt the source). What the detector
cannot be trusted for: generators it never saw (docs/synthetic.md).
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from ..core.errors import FaceIDError
from ..core.report import command
from .outcome import EXIT_NO_MATCH, SyntheticVerdict

if TYPE_CHECKING:
    from ..synthetic.detector_model import SyntheticFaceDetector

DETECTOR_ENV = "FACEID_SYNTHETIC_DETECTOR"


def add_synthetic_options(g: argparse._ActionsContainer, default) -> None:
    """The three flags (`default` wraps each default, as the app's other options do for subcommands)."""
    g.add_argument(
        "--synthetic-detector",
        metavar="FILE",
        default=default(os.environ.get(DETECTOR_ENV) or None),
        help=f"real-vs-synthetic face detector from train_detector.py: register refuses generated faces, verify and "
        f"identify report the score (default: ${DETECTOR_ENV}, else none)",
    )
    g.add_argument(
        "--allow-synthetic",
        action="store_true",
        default=default(False),
        help="register: store a face the detector flags as generated (default: refuse it)",
    )
    g.add_argument(
        "--reject-synthetic",
        action="store_true",
        default=default(False),
        help="verify / identify: refuse a probe the detector flags as generated (default: report its score only)",
    )


def load_detector(path: str, device) -> SyntheticFaceDetector:
    from ..synthetic.detector_model import load_synthetic_detector

    return load_synthetic_detector(path, device)


def verdict_of(
    detector: SyntheticFaceDetector | None, scores: list[float | None], samples: int | None = None
) -> SyntheticVerdict | None:
    """The verdict on `samples` faces (default: one per score) from their scores; None without a detector."""
    known = [s for s in scores if s is not None]
    if detector is None or not known:
        return None
    return SyntheticVerdict(max(known), detector.threshold, detector.source, samples or len(known))


def refuse(action: str, verdict: SyntheticVerdict, name: str | None = None) -> FaceIDError:
    """The refusal (exit 1, JSON carries the verdict): register's unless --allow-synthetic, or a probe's under
    --reject-synthetic."""
    override = (
        "--allow-synthetic registers it anyway"
        if action == "register"
        else "without --reject-synthetic the decision is made"
    )
    who = f" {name!r}" if name else ""
    err = FaceIDError(
        f"REFUSED{' to register' + who if action == 'register' else ''}: the face looks generated (synthetic-face "
        f"score {verdict.score:.3f} >= threshold {verdict.threshold:.3f} of {verdict.detector}); {override} "
        f"({command('faceid_app.py')} {action} --help).",
        exit_code=EXIT_NO_MATCH,
    )
    err.details.update({"refused": "synthetic", "synthetic": verdict.to_dict()})
    if action == "register":
        err.details.update({"name": name, "registered": False})
    return err


def synthetic_fields(verdict: SyntheticVerdict | None) -> dict:
    """The JSON key an action's object gains when a detector ran (none otherwise)."""
    return {} if verdict is None else {"synthetic": verdict.to_dict()}


def synthetic_lines(verdict: SyntheticVerdict | None) -> list[str]:
    return [] if verdict is None else [verdict.line() + "."]
