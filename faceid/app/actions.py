"""The app's actions, one function each: register, verify, identify, list, delete, reenroll, check,
import-seed and liveness. Each takes the `Session`, does its work and returns its result type
(`faceid.app.outcome`); what a person or a script reads is made from that by `faceid.app.render`.

Exit codes: 0 match / success, 1 no match / rejected (below threshold, someone else clearly closer, nobody
identified, ambiguous, liveness failed),
2 error (bad input, no camera, no usable face, no weights, ...: a `FaceIDError`), 130 interrupted.

The cheap checks fail first: the gallery (a missing name, a duplicate, a foreign model), then the source,
and only then the network loads (`Session.check_source`). Decisions are made in `faceid.app.decision`;
frames become samples in `faceid.app.capture`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..core import report
from ..core.errors import FaceIDError
from ..core.fileio import require_regular_file
from ..model.embeddings import template_of
from . import render
from .capture import collect, probe, run_liveness
from .decision import (
    accepts,
    comparison,
    decision_margin,
    gallery_pairs,
    identified,
    identify_threshold,
    looks_like_someone,
    people_compared,
    threshold_source,
    verified,
    verify_threshold,
)
from .gallery_access import clean_name, load_seed_pickle
from .outcome import (
    Checked,
    Deleted,
    Identified,
    Listed,
    LivenessChecked,
    LivenessRefused,
    ModelInfo,
    Reenrolled,
    Registered,
    Rejected,
    Result,
    SeedImported,
    Verified,
)
from .session import Session
from .synthetic_check import SyntheticVerdict, refuse, verdict_of


def register(session: Session, name: str, replace: bool = False) -> Registered | LivenessRefused:
    """Store `name` from --samples good samples (after a passed head-turn challenge under --liveness)."""
    args = session.args
    name = clean_name(name, new=True)
    with session.gallery() as g:  # gallery, then source, then the network: the cheap checks fail first
        g.require_writable()
        if g.get(name) is not None and not replace:
            raise FaceIDError(f"{name!r} is already registered; use --replace to register them again.")
    session.check_source()
    embedder = session.embedder
    fp = embedder.fingerprint
    with session.gallery() as g:
        g.check_model(fp, exclude=name)
    liveness, live_face = None, None
    if args.liveness:
        liveness = run_liveness(session)
        if not liveness.passed:
            return LivenessRefused("register", liveness, name=name)
        assert liveness.start is not None  # a passed challenge stored its starting face
        live_face = liveness.start.embedding
    report.note(f"registering {name!r}: taking {report.count(args.samples, 'good sample')} from {args.source}")
    samples, notes = collect(session, args.samples, "c")
    synthetic = verdict_of(session.synthetic_detector, [s.synthetic for s in samples])
    if synthetic is not None and synthetic.flagged and not args.allow_synthetic:
        raise refuse("register", synthetic, name)
    embeddings = np.stack([s.embedding for s in samples]).astype(np.float32)
    template = template_of(embeddings)
    if liveness is not None and live_face is not None:
        # the samples are taken after the challenge: they must show the face that passed it
        face_score = float(template @ live_face)
        if not accepts(face_score, verify_threshold(args, embedder)):
            return LivenessRefused("register", liveness, name=name, face_score=face_score)
    with session.gallery() as g:
        other, looks_like, duplicate = looks_like_someone(args, embedder, g, template, name)
        person = g.register(name, [s.crop for s in samples], embeddings, fp, replace=replace)
    return Registered(
        name=person.name,
        samples=len(samples),
        min_sample_cosine=float((embeddings @ template).min()),
        similar_to=other,
        looks_like_them=looks_like,
        duplicate_threshold=duplicate,
        notes=notes,
        liveness=liveness,
        model=model_info(session),
        synthetic=synthetic,
    )


def verify(session: Session, name: str) -> Verified:
    """1:1: is the face at the source `name`, and nobody else clearly more so? (A failed --liveness challenge
    raises `Rejected`.)"""
    name = clean_name(name)
    with session.gallery() as g:
        if g.get(name) is None:
            raise FaceIDError(f"No one named {name!r} is registered (see the list action).")
        session.check_source()
        fp = session.embedder.fingerprint
        g.check_model(fp)
    sample, notes, liveness = probe(session, "v")
    synthetic = probe_verdict(session, "verify", sample)
    with session.gallery() as g:
        score = float(g.verify(name, sample.embedding, fp))
        other = g.best_other_match(sample.embedding, fp, exclude_name=name)
        person = g.get(name)
        pairs = gallery_pairs(session.args, g, fp)
    kind = comparison(person.n_samples if person else 1, sample.count)
    threshold = verify_threshold(session.args, session.embedder, kind, pairs)
    margin = decision_margin(session.args, session.embedder, kind)
    match, beaten = verified(score, other, threshold, margin)
    return Verified(
        name=name,
        score=score,
        threshold=threshold,
        match=match,
        closest_other=other,
        quality=sample.metrics,
        notes=notes,
        liveness=liveness,
        model=model_info(session),
        margin=margin,
        beaten_by=other if beaten else None,
        synthetic=synthetic,
    )


def identify(session: Session) -> Identified:
    """1:N: who is the face at the source? The top --top-k names; AMBIGUOUS when the best two are both above
    the threshold and within the margin. (A failed --liveness raises `Rejected`.)"""
    with session.gallery() as g:
        if not g.fingerprints():
            raise FaceIDError("No one is registered yet; register someone first.")
        session.check_source()
        g.check_model(session.embedder.fingerprint)
    sample, notes, liveness = probe(session, "v")
    synthetic = probe_verdict(session, "identify", sample)
    fp = session.embedder.fingerprint
    args = session.args
    with session.gallery() as g:
        matches = g.identify(sample.embedding, fp, k=max(args.top_k, 2))  # the margin needs the second
        best = g.get(matches[0].name) if matches else None
        people = people_compared(g.fingerprints(), fp)
        pairs = gallery_pairs(args, g, fp)
    kind = comparison(best.n_samples if best else 1, sample.count)
    threshold = identify_threshold(args, session.embedder, people, kind, pairs)
    margin = decision_margin(args, session.embedder, kind)
    decision, person, candidates = identified(matches, threshold, margin)
    return Identified(
        matches=matches[: args.top_k],
        threshold=threshold,
        identified=person,
        quality=sample.metrics,
        notes=notes,
        liveness=liveness,
        model=model_info(session),
        margin=margin,
        decision=decision,
        candidates=candidates,
        synthetic=synthetic,
    )


def probe_verdict(session: Session, action: str, sample) -> SyntheticVerdict | None:
    """The probe's synthetic-face verdict (None without a detector, or under --liveness, whose frontal face is
    not scored); a flagged probe under --reject-synthetic is refused before any decision."""
    if sample.synthetic is None:
        return None
    verdict = verdict_of(session.synthetic_detector, [sample.synthetic], sample.count)
    if verdict is not None and verdict.flagged and session.args.reject_synthetic:
        raise refuse(action, verdict)
    return verdict


def list_people(session: Session) -> Listed:
    with session.gallery() as g:
        return Listed(g.people())


def check_gallery(session: Session) -> Checked:
    """The gallery's full integrity check (it also runs by itself after a crash): no model needed."""
    with session.gallery() as g:
        problems = g.check()
        index_problem = None if problems else g.check_index()
        count = sum(g.fingerprints().values())
    if problems:
        raise FaceIDError(
            f"The gallery {g.db_path} is damaged: {problems[0]}"
            f"{f' (and {len(problems) - 1} more problems)' if len(problems) > 1 else ''}; "
            f"restore a backup, or delete and re-register the people concerned."
        )
    return Checked(str(g.db_path), count, str(g.index_path), index_problem)


def delete(session: Session, name: str) -> Deleted:
    name = clean_name(name)
    with session.gallery() as g:
        if not g.delete(name):
            raise FaceIDError(f"No one named {name!r} is registered (see the list action).")
    return Deleted(name)


def reenroll(session: Session) -> Reenrolled:
    """Recompute every template from the stored crops with the loaded model (after a model change)."""
    with session.gallery() as g:  # a damaged, foreign or read-only gallery fails before the network loads
        g.require_writable()
    pipe = session.pipeline
    side = pipe.spec.crop_size

    def embed_stored(crops: list[np.ndarray]) -> np.ndarray:
        bad = [c.shape for c in crops if c.shape[:2] != (side, side)]
        if bad:
            raise FaceIDError(
                f"Stored crops are {bad[0][0]}x{bad[0][1]} but this model's {pipe.spec.crop!r} "
                f"crop is {side}x{side}; register these people again."
            )
        return pipe.embed_crops(crops)

    with session.gallery() as g:
        count = g.reenroll(embed_stored, pipe.embedder.fingerprint, progress=not session.args.json)
        imported = [p.name for p in g.people() if p.n_samples == 0]
    return Reenrolled(people=count, imported_kept=imported, model=model_info(session))


def import_seed(session: Session, pickle_path: str, replace: bool = False) -> SeedImported:
    """Take the seed app's face_embeddings.pkl as templates of the loaded model (read without running code)."""
    path = Path(pickle_path).expanduser()
    require_regular_file(path, "The seed pickle")
    load_seed_pickle(path)  # a bad pickle or gallery fails here, before seconds of model loading
    with session.gallery() as g:
        g.require_writable()
    with session.gallery() as g:
        count = g.import_seed_pickle(path, session.embedder.fingerprint, replace=replace)
    return SeedImported(people=count, path=str(path), model=model_info(session))


def check_liveness(session: Session) -> LivenessChecked:
    """The head-turn challenge on its own."""
    session.check_source()
    return LivenessChecked(run_liveness(session))


def model_info(session: Session) -> ModelInfo:
    """The loaded model, as a result records it."""
    e = session.embedder
    return ModelInfo(
        source=e.source,
        runtime=e.runtime,
        fingerprint=e.fingerprint,
        crop=e.spec.crop,
        threshold_source=threshold_source(session.args, e),
        calibration=e.calibration,
    )


def run_action(session: Session, action: str, args: argparse.Namespace) -> Result:
    """Run `action` with its own arguments (`args`: name, replace, pickle), and show a decision's verdict in the
    preview window. A failed --liveness challenge is an answer (exit 1), not an error."""
    try:
        result = _dispatch(session, action, args)
    except Rejected as rejected:
        result = LivenessRefused(action, rejected.liveness)
    verdict = render.verdict_caption(result)
    if verdict is not None:
        session.show_verdict(*verdict)
    return result


def _dispatch(session: Session, action: str, args: argparse.Namespace) -> Result:
    if action == "register":
        return register(session, args.name, replace=args.replace)
    if action == "verify":
        return verify(session, args.name)
    if action == "delete":
        return delete(session, args.name)
    if action == "import-seed":
        return import_seed(session, args.pickle, replace=args.replace)
    if action == "enroll":
        from .enroll import enroll

        return enroll(session, args.folder, args.replace, model_info)
    if action == "identify" and getattr(args, "all_faces", False):
        from .batch import identify_all_faces

        return identify_all_faces(session, model_info)
    without_arguments: dict[str, Callable[[Session], Result]] = {
        "identify": identify,
        "list": list_people,
        "reenroll": reenroll,
        "liveness": check_liveness,
        "check": check_gallery,
    }
    return without_arguments[action](session)
