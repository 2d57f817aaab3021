"""From frames to faces the app can trust: quality-gated samples, the probe, and the liveness challenge.

Every frame of the session's source goes through the detector (the largest face), the quality gate
(`faceid.app.quality`: size, sharpness, pose, ...) and only then the embedder with the crop the model's
checkpoint records. A probe is the template (`faceid.model.embeddings.template_of`, the rule the gallery's
templates and the calibration tables use) of ``--probe-samples`` such samples; with ``--liveness`` it is the
frontal face of a passed head-turn challenge instead.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import numpy as np

from ..core import report
from ..core.errors import FaceIDError
from ..model.embeddings import template_of
from .camera import FrameSource
from .outcome import EXIT_NO_MATCH, Rejected, Sample
from .quality import assess
from .session import Session

if TYPE_CHECKING:
    from .liveness import LivenessResult


# skipped folder files named one by one (on stderr and in the notes) before the rest are summed up in one line
SKIPPED_SHOWN = 10


def collect(session: Session, n: int, key: str, per_key: int = 1) -> tuple[list[Sample], list[str]]:
    """(samples, notes): read frames until `n` samples pass the quality gate. Headless: take them as they come,
    leaving `--sample-gap` frames between samples of a video or camera; with a preview window: a press of `key`
    takes `per_key`. Photos (an image or a folder) give one sample each and no gap; when they run out with at
    least one good sample, those are used (one photo is enough) and a note says so.

    Each note is said once, on stderr, as it happens (and kept in the notes for --json). Rejected frames are
    counted by reason and summed up in one line (--verbose: one line each); skipped folder files are named up
    to `SKIPPED_SHOWN`, then counted."""
    pipe, preview = session.pipeline, session.preview
    source = session.take_source()
    samples: list[Sample] = []
    notes: list[str] = []
    rejections: Counter[str] = Counter()
    skip, gapped, armed, noted = 0, 0, 0, 0
    unit = "photo" if source.stills else "frame"
    try:
        for frame in source:
            noted = _note_skipped(source, notes, noted)
            if skip:
                skip -= 1
                gapped += 1
                continue
            result = pipe.analyze(frame, embed=False)
            for note in result.notes:
                _note(notes, note)
            quality = assess(frame, result.face, session.limits) if result.face is not None else None
            reason = (
                (result.miss or "no face found") if quality is None else (None if quality.ok else quality.summary())
            )
            pressed = preview.show(
                frame,
                None if result.face is None else result.face.box,
                (f"{len(samples)}/{n} samples", reason or f"press '{key}'"),
                ok=reason is None,
            )
            if pressed == "q":
                raise FaceIDError("Cancelled from the preview window.", exit_code=EXIT_NO_MATCH)
            if pressed == key:
                armed = per_key
            if preview.enabled and not armed:
                continue
            if reason is not None:
                rejections[reason] += 1
                report.detail(f"{source.last_read} rejected: {reason}")
                continue
            # reason is None only for a face that was assessed and passed
            assert result.face is not None and quality is not None
            session.last_view = (frame, result.face.box)
            crop = pipe.crop(frame, result.face)
            detector = session.synthetic_detector
            synthetic = None if detector is None else detector.score_face(frame, result.face.box, result.face.landmarks)
            samples.append(Sample(crop, pipe.embed_crops([crop])[0], quality.metrics, synthetic=synthetic))
            armed = max(armed - 1, 0)
            report.note(
                f"sample {len(samples)}/{n} ok (face {quality.metrics['face_px']:.0f} px, "
                f"sharpness {quality.metrics['sharpness']:.0f}, yaw {quality.metrics['yaw_deg']:+.0f} deg)"
            )
            if len(samples) >= n:
                break
            skip = 0 if source.stills else session.args.sample_gap
    finally:
        source.close()
        session.source_used(source)
    _note_skipped(source, notes, noted, final=True)
    if len(samples) < n and source.stills and samples and source.exhausted and not preview.enabled:
        _note(
            notes,
            f"used {report.count(len(samples), 'sample')} (asked for {n}): that is every usable photo in {source.description}",
        )
    elif len(samples) < n:
        raise _shortfall(
            source, len(samples), n, rejections, gapped, session.args.sample_gap, key, unit, preview.enabled
        )
    if rejections:
        report.note(f"{report.count(sum(rejections.values()), unit)} rejected: {_reasons(rejections)}")
    return samples, notes


def _note(notes: list[str], note: str) -> None:
    """A note said once: on stderr now, and kept for the result's JSON."""
    if note not in notes:
        notes.append(note)
        report.note(f"note: {note}")


def _reasons(rejections: Counter) -> str:
    return ", ".join(f"{reason} x{count}" for reason, count in rejections.most_common())


def _shortfall(
    source: FrameSource,
    got: int,
    n: int,
    rejections: Counter,
    gapped: int,
    gap: int,
    key: str,
    unit: str,
    windowed: bool,
) -> FaceIDError:
    """What really happened when too few good samples came: the error, counting every frame read."""
    units = unit + "s"
    ended = "the source ended" if source.exhausted else f"the frame limit ({report.count(source.frames_read, unit)})"
    if source.frames_read == 0 and source.skipped:
        shown = "; ".join(f"{name}: {reason.rstrip('.')}" for name, reason in source.skipped[:3])
        more = f"; and {len(source.skipped) - 3:,} more" if len(source.skipped) > 3 else ""
        return FaceIDError(f"None of the images in {source.description} could be read ({shown}{more}).")
    if source.frames_read == 0:
        return FaceIDError(f"Got only {got} of {n} good samples from {source.description}: no {units} were read.")
    read = [f"{report.count(source.frames_read, unit)} read", f"{got} taken"]
    if gapped:
        read.append(f"{gapped:,} left between samples by the {gap}-frame gap")
    why = _reasons(rejections) if rejections else "none"
    if windowed and not rejections:
        why = f"none captured (press '{key}' in the preview window)"
    skipped = f"; {report.count(len(source.skipped), 'unreadable file')} skipped" if source.skipped else ""
    settings = ("samples", "sample_gap") if gapped and not rejections and source.exhausted else ()
    hint = "; use a longer video, fewer samples or a smaller gap" if settings else ""
    return FaceIDError(
        f"Got only {got} of {n} good samples before {ended} from {source.description}: {', '.join(read)}; "
        f"rejected {units}: {why}{skipped}{hint}.",
        *settings,
    )


def _note_skipped(source: FrameSource, notes: list[str], noted: int, final: bool = False) -> int:
    """Say once, as it happens, which folder file was skipped and why (also kept in the notes): the first
    `SKIPPED_SHOWN` by name, the others on --verbose only; at the end (`final`) one line counts those.
    `noted`: how many of `source.skipped` were dealt with before; returns the new count."""
    for number, (name, reason) in enumerate(source.skipped[noted:], start=noted + 1):
        note = f"skipped {name}: {reason.rstrip('.')}"
        if number <= SKIPPED_SHOWN:
            _note(notes, note)
        else:
            report.detail(f"note: {note}")
    hidden = len(source.skipped) - SKIPPED_SHOWN
    if final and hidden > 0:
        _note(notes, f"skipped {report.count(hidden, 'more file')} that could not be read (--verbose names each)")
    return len(source.skipped)


def probe(session: Session, key: str) -> tuple[Sample, list[str], LivenessResult | None]:
    """(probe, notes, liveness): one good probe face for verify / identify; with --liveness, the starting face
    of a passed head-turn challenge (a failed one raises `Rejected`)."""
    if not session.args.liveness:
        n = session.args.probe_samples
        samples, notes = collect(session, n, key, per_key=n)
        template = template_of(np.stack([s.embedding for s in samples]))
        scores = [s.synthetic for s in samples if s.synthetic is not None]
        synthetic = max(scores) if scores else None
        return Sample(samples[0].crop, template, samples[0].metrics, len(samples), synthetic), notes, None
    result = run_liveness(session)
    if not result.passed:
        raise Rejected(result)
    start = result.start
    # a passed challenge stored its frontal starting face, cropped and embedded
    assert start is not None and start.crop is not None and start.embedding is not None
    sample = Sample(crop=start.crop, embedding=start.embedding, metrics=result.start_metrics)
    return sample, list(start.notes), result


def run_liveness(session: Session) -> LivenessResult:
    """The head-turn challenge on the session's source, its prompts on stderr and in the preview window."""
    from .liveness import ChallengeConfig, run_challenge

    with session.take_source() as src:

        def on_frame(frame, result, instruction):
            box = None if result.face is None else result.face.box
            return session.preview.show(frame, box, (instruction,)) == "q"

        return run_challenge(
            src,
            session.pipeline,
            ChallengeConfig(prompts=session.args.challenge_prompts),
            live=src.live,
            quality=session.limits,
            on_prompt=lambda text: report.note(f">>> {text}"),
            on_frame=on_frame,
        )
