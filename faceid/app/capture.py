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


def collect(session: Session, n: int, key: str, per_key: int = 1) -> tuple[list[Sample], list[str]]:
    """(samples, notes): read frames until `n` samples pass the quality gate. Headless: take them as they come,
    leaving `--sample-gap` frames between samples of a video or camera; with a preview window: a press of `key`
    takes `per_key`. Photos (an image or a folder) give one sample each and no gap; when they run out with at
    least one good sample, those are used (one photo is enough) and a note says so."""
    pipe, preview = session.pipeline, session.preview
    source = session.take_source()
    samples: list[Sample] = []
    notes: list[str] = []
    rejections: Counter[str] = Counter()
    skip, last_reason, armed = 0, None, 0
    unit = "photos" if source.stills else "frames"
    try:
        for frame in source:
            _note_skipped(source, notes)
            if skip:
                skip -= 1
                continue
            result = pipe.analyze(frame, embed=False)
            for note in result.notes:
                if note not in notes:
                    notes.append(note)
                    report.note(f"note: {note}")
            quality = assess(frame, result.face, session.limits) if result.face is not None else None
            reason = (result.miss or "no face found") if quality is None else (None if quality.ok else quality.summary())
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
                if reason != last_reason:
                    report.note(f"{unit[:-1]} rejected: {reason}")
                last_reason = reason
                continue
            # reason is None only for a face that was assessed and passed
            assert result.face is not None and quality is not None
            session.last_view = (frame, result.face.box)
            crop = pipe.crop(frame, result.face)
            samples.append(Sample(crop=crop, embedding=pipe.embed_crops([crop])[0], metrics=quality.metrics))
            last_reason, armed = None, max(armed - 1, 0)
            report.note(
                f"sample {len(samples)}/{n} ok (face {quality.metrics['face_px']:.0f} px, "
                f"sharpness {quality.metrics['sharpness']:.0f}, yaw {quality.metrics['yaw_deg']:+.0f} deg)"
            )
            if len(samples) >= n:
                break
            skip = 0 if source.stills else session.args.sample_gap
    finally:
        source.close()
    _note_skipped(source, notes)
    if len(samples) < n and source.stills and samples and source.exhausted and not preview.enabled:
        note = (
            f"used {len(samples)} sample{'s' if len(samples) > 1 else ''} (asked for {n}): that is every "
            f"usable photo in {source.description}"
        )
        notes.append(note)
        report.note(f"note: {note}")
    elif len(samples) < n:
        raise FaceIDError(_shortfall(source, len(samples), n, rejections, key, unit, preview.enabled))
    return samples, notes


def _shortfall(source: FrameSource, got: int, n: int, rejections: Counter, key: str, unit: str, windowed: bool) -> str:
    """What really happened when too few good samples came: the sentence of the error."""
    ended = "the source ended" if source.exhausted else f"the frame limit ({source.frames_read} {unit})"
    if source.frames_read == 0 and source.skipped:
        shown = "; ".join(f"{name}: {reason.rstrip('.')}" for name, reason in source.skipped[:3])
        more = f"; and {len(source.skipped) - 3} more" if len(source.skipped) > 3 else ""
        return f"None of the images in {source.description} could be read ({shown}{more})."
    why = "; ".join(f"{r} x{c}" for r, c in rejections.most_common(3))
    if not why:
        why = (
            f"none captured (press '{key}' in the preview window)"
            if source.frames_read and windowed
            else f"no {unit} were read"
        )
    skipped = f"; {len(source.skipped)} unreadable files skipped" if source.skipped else ""
    return (
        f"Got only {got} of {n} good samples before {ended} from {source.description}; rejected {unit}: {why}{skipped}."
    )


def _note_skipped(source: FrameSource, notes: list[str]) -> None:
    """Say once, as it happens, which folder file was skipped and why (also kept in the notes)."""
    for name, reason in source.skipped:
        note = f"skipped {name}: {reason.rstrip('.')}"
        if note not in notes:
            notes.append(note)
            report.note(f"note: {note}")


def probe(session: Session, key: str) -> tuple[Sample, list[str], LivenessResult | None]:
    """(probe, notes, liveness): one good probe face for verify / identify; with --liveness, the starting face
    of a passed head-turn challenge (a failed one raises `Rejected`)."""
    if not session.args.liveness:
        n = session.args.probe_samples
        samples, notes = collect(session, n, key, per_key=n)
        template = template_of(np.stack([s.embedding for s in samples]))
        return Sample(samples[0].crop, template, samples[0].metrics, count=len(samples)), notes, None
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
