"""``enroll DIR``: register everyone of a folder-per-person tree in one command (face_recognition's
``known_people/`` layout: ``DIR/<name>/`` holds that person's photos and clips).

Each subfolder is one person, named by the folder (validated like ``--name``). Its photos give one sample each
and its clips a sample every ``--sample-gap`` frames, until ``--samples`` samples passed the quality gate
(`faceid.app.quality`); a photo with more than one face is rejected (whose face would it be?), as is a file the
decode gate refuses. Each person is registered atomically (`Gallery.register`: all their samples or nothing) and
gets one line: samples used, rejected and why, and a warning when the new face already matches someone else (as
register warns). A person who cannot be registered (a bad name, already registered without ``--replace``, no
usable sample) is reported and the others go on: exit 0 when everyone was enrolled, 1 when someone was not.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..core import report
from ..core.decode import IMAGE_EXTENSIONS, DecodeError, read_image_file
from ..core.errors import FaceIDError
from ..model.embeddings import template_of
from .camera import open_source
from .decision import looks_like_someone
from .gallery_access import clean_name
from .outcome import Enrolled, PersonEnrolled
from .quality import assess
from .session import Session

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


def person_folders(folder: str) -> list[Path]:
    """The tree's person folders, sorted; one sentence when `folder` is not a tree of them."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FaceIDError(f"{root} is not a folder; give a folder with one subfolder per person.")
    try:
        subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as err:
        raise FaceIDError(f"Cannot read the folder {root}: {err.strerror or err}.") from None
    if not subs:
        raise FaceIDError(f"{root} has no subfolders; put each person's photos in a folder named after them.")
    return subs


def enroll(session: Session, folder: str, replace: bool, model_info) -> Enrolled:
    """Register every person of the tree; the folders and names are checked before the model loads."""
    folders = person_folders(folder)
    with session.gallery() as g:
        g.check_model(session.embedder.fingerprint)
    people = []
    with report.progress(total=len(folders), desc="enrolling", unit="person", enabled=not session.args.json) as bar:
        for sub in folders:
            bar.set_postfix_str(report.printable(sub.name)[:30], refresh=False)
            people.append(_enroll_one(session, sub, replace))
            bar.update(1)
    return Enrolled(folder=str(Path(folder).expanduser()), people=people, model=model_info(session))


def _enroll_one(session: Session, folder: Path, replace: bool) -> PersonEnrolled:
    shown = report.printable(folder.name)
    try:
        name = clean_name(folder.name, new=True)
    except FaceIDError as err:
        return PersonEnrolled(shown, False, reason=f"the folder's name is not a valid name: {err}")
    with session.gallery() as g:
        existing = g.get(name) is not None
    if existing and not replace:
        return PersonEnrolled(name, False, reason="already registered (use --replace to register them again)")
    crops, embeddings, rejected = _samples(session, folder)
    if not crops:
        why = ", ".join(f"{r} x{c}" for r, c in rejected.most_common(3)) or "no photos or clips in the folder"
        return PersonEnrolled(name, False, rejected=rejected, reason=f"no usable sample ({why})")
    emb = np.stack(embeddings).astype(np.float32)
    fp = session.embedder.fingerprint
    with session.gallery() as g:
        other, looks_like, duplicate = looks_like_someone(session.args, session.embedder, g, template_of(emb), name)
        g.register(name, crops, emb, fp, replace=replace)
    warning = (
        f"this face already matches {other.name!r} (score {other.score:.3f} >= {duplicate.text}); check that "
        f"they are different people"
        if looks_like and other is not None
        else None
    )
    return PersonEnrolled(name, True, len(crops), rejected, similar_to=other, warning=warning, replaced=existing)


def _samples(session: Session, folder: Path) -> tuple[list[np.ndarray], list[np.ndarray], Counter[str]]:
    """Up to --samples quality-gated samples from the folder's photos, then its clips: (crops, embeddings, the
    rejections counted by reason)."""
    args, pipe = session.args, session.pipeline
    crops: list[np.ndarray] = []
    embeddings: list[np.ndarray] = []
    rejected: Counter[str] = Counter()
    for frame, single in _frames(folder, args.sample_gap, rejected):
        if len(crops) >= args.samples:
            break
        result = pipe.analyze(frame, embed=False)
        if result.face is None:
            rejected["no face found"] += 1
            continue
        if single and len(result.detections) > 1:
            rejected["more than one face in the photo"] += 1
            continue
        quality = assess(frame, result.face, session.limits)
        if not quality.ok:
            rejected[quality.summary()] += 1
            continue
        crop = pipe.crop(frame, result.face)
        crops.append(crop)
        embeddings.append(pipe.embed_crops([crop])[0])
    return crops, embeddings, rejected


def _frames(folder: Path, gap: int, rejected: Counter[str]) -> Iterator[tuple[np.ndarray, bool]]:
    """(frame, is a photo) from the folder's photos (each through the decode gate), then from its clips (every
    `gap`+1-th frame); files of other kinds are ignored."""
    try:
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    except OSError as err:
        rejected[f"folder unreadable ({err.strerror or err})"] += 1
        return
    for path in (p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS):
        try:
            yield read_image_file(path), True
        except DecodeError as err:
            rejected[f"unreadable file ({err.reason.rstrip('.')})"] += 1
    for path in (p for p in files if p.suffix.lower() in VIDEO_EXTENSIONS):
        try:
            source = open_source(str(path))
        except FaceIDError:
            rejected["unreadable clip"] += 1
            continue
        with source:
            for i, frame in enumerate(source):
                if i % (gap + 1) == 0:
                    yield frame, False
