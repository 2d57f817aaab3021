"""Where the app decides: which threshold a comparison is held to, and what a score against it means.

A threshold (a `faceid.model.calibration.Threshold`, which carries the sentence that explains it) comes from,
in this order:

1. ``--threshold``: a fixed cosine for every decision ("option");
2. the model's calibration table ("table"): verify reads it at ``--far``, the false-accept rate of one
   comparison; identify at ``--fpir`` for the number of people the probe is compared with, so the threshold
   rises as the gallery grows (a stranger gets one chance per person);
3. the checkpoint's single 1:1 threshold ("checkpoint"), else the default ("default"), both labelled
   uncalibrated in their sentence.

A score is accepted when it is at or above the threshold (`accepts`): verify's match, identify's best name,
and register's warning that a new face already looks like someone else all use that one comparison.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

from ..model.calibration import Threshold

if TYPE_CHECKING:
    from ..model.embedder import Embedder


class Scored(Protocol):
    """Anything with a cosine score (the gallery's matches)."""

    score: float


S = TypeVar("S", bound=Scored)


def threshold_source(args: argparse.Namespace, embedder: Embedder) -> str:
    """Where this session's thresholds come from: "option", "table", "checkpoint" or "default"."""
    if args.threshold is not None:
        return "option"
    if embedder.calibration is not None:
        return "table"
    return "checkpoint" if embedder.threshold_calibrated else "default"


def verify_threshold(args: argparse.Namespace, embedder: Embedder) -> Threshold:
    """The threshold of one 1:1 comparison (verify)."""
    return _threshold(args, embedder, gallery_size=None)


def identify_threshold(args: argparse.Namespace, embedder: Embedder, gallery_size: int) -> Threshold:
    """The threshold of a 1:N search among `gallery_size` people (identify, and register's duplicate check)."""
    return _threshold(args, embedder, gallery_size=gallery_size)


def _threshold(args: argparse.Namespace, embedder: Embedder, gallery_size: int | None) -> Threshold:
    source = threshold_source(args, embedder)
    if source == "option":
        return Threshold(float(args.threshold), f"threshold {args.threshold:.3f} from --threshold", "option")
    if embedder.calibration is not None:
        return (
            embedder.calibration.threshold_for_far(args.far)
            if gallery_size is None
            else embedder.calibration.threshold_for_fpir(args.fpir, gallery_size)
        )
    value = embedder.threshold
    scope = "" if gallery_size is None else f", not adjusted for {gallery_size:,} people"
    if source == "checkpoint":
        return Threshold(
            value,
            f"threshold {value:.3f} UNCALIBRATED: the checkpoint has no "
            f"calibration table, only a 1:1 threshold from single images{scope}",
            "checkpoint",
        )
    return Threshold(
        value,
        f"threshold {value:.3f} is the UNCALIBRATED default{scope}: use a "
        f"calibrated checkpoint (--model), a --calibration file, or --threshold",
        "default",
    )


def people_compared(fingerprints: dict[str, int], fingerprint: str) -> int:
    """How many people identify compares a probe with: those registered with the loaded model
    (`fingerprints`: the gallery's count of templates per model fingerprint)."""
    return int(fingerprints.get(fingerprint, 0))


def accepts(score: float, threshold: Threshold) -> bool:
    """THE verdict: a score at or above the threshold is the same person."""
    return score >= threshold.value


def identified(matches: Sequence[S], threshold: Threshold) -> S | None:
    """identify's answer: the best of `matches` (best first) if it is accepted, else nobody."""
    return matches[0] if matches and accepts(matches[0].score, threshold) else None
