"""Where the app decides: which threshold and margin a comparison is held to, and what its scores mean.

A threshold (a `faceid.model.calibration.Threshold`, which carries the sentence that explains it) comes from,
in this order:

1. ``--threshold``: a fixed cosine for every decision ("option");
2. the model's calibration table ("table"), read for the comparison made (the person's template of k images
   vs the probe of p frames: the table's kind for it, and the line says when it has no exact one): verify
   reads it at ``--far``, the false-accept rate of one comparison; identify at ``--fpir`` for the number of
   people the probe is compared with, so the threshold rises as the gallery grows (a stranger gets one chance
   per person), past the table's data by its tail fit. The gallery's own cross-person template pairs then
   check it: a table they contradict is refused, and a threshold looser than what they show is raised to it
   ("gallery"; `faceid.model.gallery_pairs`); so is one the model's own validation record contradicts
   (`faceid.model.validation_record`);
3. without a table, the gallery's pairs when there are enough of them ("gallery"), else the checkpoint's
   single 1:1 threshold ("checkpoint"), else the default ("default"), both labelled uncalibrated.

A margin (`faceid.model.margin`) comes from ``--margin``, else the table's kind for the comparison, else the
uncalibrated default. The rule itself lives with the margin in `faceid.model.margin`, so the evaluator's 1:N
mode measures exactly what the app decides: verify is a MATCH when the claimed person clears the threshold and
nobody else scores more than the margin above them; identify names the best candidate at or above the
threshold unless the second is too and within the margin (AMBIGUOUS).

`accepts` (a score at or above the threshold) is also register's test of whether a new face already looks
like someone else.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol, TypeVar

from ..core.report import count
from ..model.calibration import Threshold
from ..model.gallery_pairs import SAMPLED_TEMPLATES, GalleryPairs, decision_threshold, read_from_gallery
from ..model.margin import AMBIGUOUS, DEFAULT_MARGIN, IDENTIFIED, Margin, identify_decision, verify_decision
from ..model.validation_record import check_with_record

if TYPE_CHECKING:
    from ..model.embedder import Embedder
    from .gallery_access import Gallery, Match


class Scored(Protocol):
    """Anything with a cosine score (the gallery's matches)."""

    score: float


S = TypeVar("S", bound=Scored)
Comparison = tuple[int, int]  # (images in the template, images in the probe)


def threshold_source(args: argparse.Namespace, embedder: Embedder) -> str:
    """Where this session's thresholds come from: "option", "table", "checkpoint" or "default" (a single
    decision may say "gallery" instead: see the module's docstring)."""
    if args.threshold is not None:
        return "option"
    if embedder.calibration is not None:
        return "table"
    return "checkpoint" if embedder.threshold_calibrated else "default"


def comparison(template_samples: int, probe_samples: int) -> Comparison:
    """The comparison kind of a person's template (0 samples: imported from a seed, counted as one image, the
    kind with the heaviest impostor tail) against a probe."""
    return max(1, int(template_samples)), max(1, int(probe_samples))


def gallery_pairs(args: argparse.Namespace, g: Gallery, fingerprint: str) -> GalleryPairs | None:
    """The gallery's cross-person template pairs of this model (not read under --threshold: unused there)."""
    if args.threshold is not None:
        return None
    templates, people = g.template_sample(fingerprint, SAMPLED_TEMPLATES)
    return GalleryPairs.from_templates(templates, people)


def verify_threshold(
    args: argparse.Namespace,
    embedder: Embedder,
    kind: Comparison | None = None,
    pairs: GalleryPairs | None = None,
) -> Threshold:
    """The threshold of one 1:1 comparison (verify) of this kind."""
    return _threshold(args, embedder, None, kind, pairs)


def identify_threshold(
    args: argparse.Namespace,
    embedder: Embedder,
    gallery_size: int,
    kind: Comparison | None = None,
    pairs: GalleryPairs | None = None,
    searches: int = 1,
) -> Threshold:
    """The threshold of a 1:N search among `gallery_size` people (identify, and register's duplicate check).

    `searches`: probes decided together, the faces of one picture (``identify --all-faces``): a picture of five
    strangers gives five chances to name someone, so --fpir holds for the whole picture, read for `searches` x
    `gallery_size` comparisons, and the line says so."""
    searches = max(1, int(searches))
    threshold = _threshold(args, embedder, gallery_size * searches, kind, pairs)
    if searches == 1:
        return threshold
    together = f"for {searches} faces x {gallery_size:,} {'person' if gallery_size == 1 else 'people'}"
    return replace(threshold, text=threshold.text.replace(f"for {gallery_size * searches:,} people", together, 1))


def _threshold(
    args: argparse.Namespace,
    embedder: Embedder,
    gallery_size: int | None,
    kind: Comparison | None,
    pairs: GalleryPairs | None,
) -> Threshold:
    source = threshold_source(args, embedder)
    if source == "option":
        return Threshold(float(args.threshold), f"threshold {args.threshold:.3f} from --threshold", "option")
    fpir = None if gallery_size is None else args.fpir
    if embedder.calibration is not None:
        reading = decision_threshold(embedder.calibration, args.far, fpir, gallery_size or 1, kind, pairs)
        return check_with_record(reading, embedder.validation)
    own = read_from_gallery(pairs, args.far, fpir, gallery_size or 0)
    if own is not None:
        return own
    value = embedder.threshold
    scope = "" if gallery_size is None else f", not adjusted for {count(gallery_size, 'person', 'people')}"
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


def decision_margin(args: argparse.Namespace, embedder: Embedder, kind: Comparison | None = None) -> Margin:
    """The margin of this kind of comparison: --margin, else the table's, else the uncalibrated default."""
    if args.margin is not None:
        return Margin(float(args.margin), "option", f"margin {args.margin:.3f} from --margin")
    if embedder.calibration is not None:
        return embedder.calibration.margin_for(kind)
    return Margin(
        DEFAULT_MARGIN,
        "default",
        f"margin {DEFAULT_MARGIN:.3f} is the UNCALIBRATED default: no calibration table measured one",
    )


def looks_like_someone(
    args: argparse.Namespace, embedder: Embedder, g: Gallery, template, name: str
) -> tuple[Match | None, bool, Threshold]:
    """register's and enroll's check of a new template: (the closest other person, whether identify would take
    the face for them, the threshold of that 1:N search among the people registered, this one at least)."""
    fp = embedder.fingerprint
    other = g.best_other_match(template, fp, exclude_name=name)
    duplicate = identify_threshold(args, embedder, max(1, people_compared(g.fingerprints(), fp)))
    return other, other is not None and accepts(other.score, duplicate), duplicate


def people_compared(fingerprints: dict[str, int], fingerprint: str) -> int:
    """How many people identify compares a probe with: those registered with the loaded model
    (`fingerprints`: the gallery's count of templates per model fingerprint)."""
    return int(fingerprints.get(fingerprint, 0))


def accepts(score: float, threshold: Threshold) -> bool:
    """A score at or above the threshold."""
    return score >= threshold.value


def verified(score: float, other: Scored | None, threshold: Threshold, margin: Margin) -> tuple[bool, bool]:
    """verify's answer: (match, beaten by `other`) - `faceid.model.margin.verify_decision`."""
    return verify_decision(score, None if other is None else other.score, threshold.value, margin.value)


def identified(matches: Sequence[S], threshold: Threshold, margin: Margin) -> tuple[str, S | None, list[S]]:
    """identify's answer from `matches` (best first): (decision, the person identified or None, the tied
    candidates: those at or above the threshold within the margin of the best, when AMBIGUOUS)."""
    decision = identify_decision([m.score for m in matches], threshold.value, margin.value)
    if decision == AMBIGUOUS:
        best = matches[0].score
        return decision, None, [m for m in matches if accepts(m.score, threshold) and best - m.score < margin.value]
    return decision, (matches[0] if decision == IDENTIFIED else None), []
