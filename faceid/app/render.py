"""What the app says: every action's result as the lines a person reads and as the JSON object a script reads.

One function per result type makes both, side by side, so the text and the JSON of an action cannot drift
apart; tests/app/test_render.py pins the JSON's keys and types. Under ``--json`` the command line prints
``{"ok": true, **data}``; errors are printed by `faceid.core.errors.run_cli`, not here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from ..core import report
from ..core.report import count
from ..model.margin import AMBIGUOUS
from .decision import accepts
from .face_rows import LOW_QUALITY
from .gallery_access import Match, display_name
from .outcome import (
    Checked,
    Deleted,
    Enrolled,
    FacesFound,
    Identified,
    Listed,
    LivenessChecked,
    LivenessRefused,
    ModelInfo,
    Outcome,
    PersonEnrolled,
    Reenrolled,
    Registered,
    Result,
    SeedImported,
    Verified,
)
from .synthetic_check import synthetic_fields, synthetic_lines


def outcome(result: Result) -> Outcome:
    """The result as printed: exit code, JSON object (without "ok") and text lines."""
    data, lines = _RENDERERS[type(result)](result)
    return Outcome(result.exit_code, data, lines)


def verdict_caption(result: Result) -> tuple[str, bool] | None:
    """(caption, accepted) drawn on the probe frame after a decision; None for the other actions."""
    if isinstance(result, Verified):
        verdict = "MATCH" if result.match else "NO MATCH"
        return f"{verdict} {result.name} {result.score:.3f} (threshold {result.threshold.value:.3f})", result.match
    if isinstance(result, Identified):
        best, matches = result.identified, result.matches
        label = (
            f"{best.name} {best.score:.3f}"
            if best
            else "ambiguous: " + " / ".join(f"{m.name} {m.score:.3f}" for m in result.candidates)
            if result.decision == AMBIGUOUS
            else f"unknown (best {matches[0].score:.3f})"
            if matches
            else "unknown (nobody compared)"
        )
        return f"{label}, threshold {result.threshold.value:.3f}", best is not None
    return None


# ----------------------------------------------------------------------------- one renderer per result


Rendered = tuple[dict[str, Any], list[str]]


def _registered(r: Registered) -> Rendered:
    other = r.similar_to
    warning = (
        f"this face already matches {other.name!r} (score {other.score:.3f} >= "
        f"{r.duplicate_threshold.text}); check that they are different people"
        if other is not None and r.looks_like_them
        else None
    )
    lines = [
        f"Registered {r.name!r} from {count(r.samples, 'sample')} (lowest sample-to-template cosine {r.min_sample_cosine:.3f})."
    ]
    if warning:
        lines.append(f"WARNING: {warning}.")
    data = {
        "action": "register",
        "name": r.name,
        "registered": True,
        "samples": r.samples,
        "min_sample_cosine": round(r.min_sample_cosine, 4),
        "warning": warning,
        "notes": r.notes,
        "similar_to": _match(other),
        "liveness": None if r.liveness is None else r.liveness.to_dict(),
        "model": _model(r.model),
        **synthetic_fields(r.synthetic),
    }
    return data, lines + synthetic_lines(r.synthetic)


def _liveness_refused(r: LivenessRefused) -> Rendered:
    reason = (
        r.liveness.reason
        if r.face_score is None
        else f"the registered face (score {r.face_score:.3f}) is not the one that passed the head-turn challenge"
    )
    if r.action == "register":
        data = {"action": "register", "name": r.name, "registered": False, "liveness": r.liveness.to_dict()}
    else:  # verify / identify: no decision was made
        data = {"liveness": r.liveness.to_dict(), "match": False, "action": r.action}
    return data, [f"LIVENESS FAILED: {reason}."]


def _verified(r: Verified) -> Rendered:
    t, m, beaten = r.threshold, r.margin, r.beaten_by
    verdict = "MATCH" if r.match else "NO MATCH"
    if beaten is not None:
        head = (
            f"NO MATCH: {r.name!r} score {r.score:.3f}, but {beaten.name!r} scores {beaten.score:.3f}, more than "
            f"the margin {m.value:.3f} higher ({t.text})."
        )
    else:
        head = f"{verdict}: {r.name!r} score {r.score:.3f} {'>=' if accepts(r.score, t) else '<'} {t.value:.3f} ({t.text})."
    lines = [head]
    if r.closest_other is not None:
        lines.append(f"closest other person: {r.closest_other.name!r} {r.closest_other.score:.3f}")
    lines.append(f"{m.text}.")
    reason = None if r.match else "beaten by another person" if beaten is not None else "below threshold"
    data = {
        "action": "verify",
        "name": r.name,
        "match": r.match,
        "score": round(r.score, 4),
        **t.decision_fields(),
        **m.decision_fields(),
        "reason": reason,
        "beaten_by": _match(beaten),
        "closest_other": _match(r.closest_other),
        "quality": r.quality,
        "notes": r.notes,
        "liveness": None if r.liveness is None else r.liveness.to_dict(),
        "model": _model(r.model),
        **synthetic_fields(r.synthetic),
    }
    return data, lines + synthetic_lines(r.synthetic)


def _identified(r: Identified) -> Rendered:
    t, m, best = r.threshold, r.margin, r.identified
    if best is not None:
        head = f"IDENTIFIED: {best.name!r} score {best.score:.3f} >= {t.value:.3f} ({t.text})."
    elif r.decision == AMBIGUOUS:
        named = " and ".join(f"{c.name!r} {c.score:.3f}" for c in r.candidates)
        head = (
            f"AMBIGUOUS: {named} are {'both' if len(r.candidates) == 2 else 'all'} at or above {t.value:.3f} and "
            f"within the margin {m.value:.3f} of "
            f"each other: no one is named ({t.text})."
        )
    else:
        head = f"UNKNOWN: nobody scored at or above {t.value:.3f} ({t.text})."
    lines = [head]
    lines += [
        f"  {i}. {x.name:<24} {x.score:.3f}{'  <- above threshold' if accepts(x.score, t) else ''}"
        for i, x in enumerate(r.matches, 1)
    ]
    lines.append(f"{m.text}.")
    data = {
        "action": "identify",
        "decision": r.decision,
        "identified": None if best is None else best.name,
        "candidates": [_match(c) for c in r.candidates],
        "matches": [_match(x) for x in r.matches],
        **t.decision_fields(),
        **m.decision_fields(),
        "quality": r.quality,
        "notes": r.notes,
        "liveness": None if r.liveness is None else r.liveness.to_dict(),
        "model": _model(r.model),
        **synthetic_fields(r.synthetic),
    }
    return data, lines + synthetic_lines(r.synthetic)


def _faces_found(r: FacesFound) -> Rendered:
    s = r.summary
    every = report.verbosity() >= report.VERBOSE
    lines = [_face_line(row) for row in r.rows if every or row["decision"] != LOW_QUALITY]
    hidden = [] if every else [row for row in r.rows if row["decision"] == LOW_QUALITY]
    if hidden:  # faces below the gate: summed up by reason unless --verbose
        reasons = Counter(reason.split(" (")[0] for row in hidden for reason in row["quality"].split(", "))
        lines.append(
            f"{len(hidden)} {s['rows']} below the "
            f"quality gate, not decided (--verbose lists them): "
            + ", ".join(f"{reason} x{n}" for reason, n in reasons.most_common())
        )
    counted = ", ".join(f"{s[d]} {d.replace('_', ' ')}" for d in ("identified", "ambiguous", "unknown", "low_quality"))
    people = ", ".join(f"{name!r} x{n}" for name, n in s["people"].items())
    what = s["rows"]
    lines.append(
        f"{s['faces']} {what} in {s['pictures']} {s['unit']}{'s' if s['pictures'] != 1 else ''} of {r.source}: "
        f"{counted}" + (f"; seen: {people}" if people else "") + f" ({s['faces_per_s']:.1f} faces/s)."
    )
    if s["skipped_files"]:
        lines.append(f"{s['skipped_files']} unreadable files skipped (see the notes).")
    if s["written_to"]:
        lines.append(f"One row per {what[:-1]} written to {' and '.join(s['written_to'])}.")
    lines += [f"{t}." for t in s["thresholds"]]
    data = {
        "action": "identify",
        "faces": r.rows,
        "summary": s,
        "source": r.source,
        "notes": r.notes,
        "model": _model(r.model),
    }
    return data, lines


def _face_line(row: dict) -> str:
    """One face (or track) as a person reads it: where, then the decision with its score and runner-up."""
    where, face = row["file"], f" face {row['face']}"
    if row["frames"] is not None:
        face = ""
        span = f"frames {row['frame']}-{row['last_frame']}"
        if row["time_s"] is not None:
            span += f" ({row['time_s']:.1f}-{row['last_time_s']:.1f} s)"
        where += f" track {row['track']} {span}, {row['frames']} seen"
    elif row["frame"] is not None:
        where += f" frame {row['frame']}" + (f" ({row['time_s']:.2f} s)" if row["time_s"] is not None else "")
    box = "[" + ", ".join(f"{v:.0f}" for v in row["box"]) + "]"
    head = f"{where}{face} {box}: "
    decision = row["decision"]
    if decision == "low_quality":
        return head + f"LOW QUALITY ({row['quality']})"
    runner = row["runner_up"]
    after = f", runner-up {runner['name']!r} {runner['score']:.3f}" if runner else ""
    if decision == "identified":
        return head + f"IDENTIFIED {row['name']!r} {row['score']:.3f} >= {row['threshold']:.3f}{after}"
    if decision == AMBIGUOUS:
        named = " / ".join(f"{c['name']!r} {c['score']:.3f}" for c in row["candidates"])
        return head + f"AMBIGUOUS {named} (within the margin {row['margin']:.3f})"
    best = f"best {row['score']:.3f} < {row['threshold']:.3f}" if row["score"] is not None else "nobody compared"
    return head + f"UNKNOWN ({best})"


def _enrolled(r: Enrolled) -> Rendered:
    done = sum(p.registered for p in r.people)
    lines = [_enrolled_line(p) for p in r.people]
    lines.append(f"Enrolled {done} of {len(r.people)} people from {report.printable(r.folder)}.")
    rows = [
        {
            "name": p.name,
            "registered": p.registered,
            "replaced": p.replaced,
            "samples": p.samples,
            "rejected": dict(p.rejected.most_common()),
            "reason": p.reason,
            "warning": p.warning,
            "similar_to": _match(p.similar_to),
        }
        for p in r.people
    ]
    data = {
        "action": "enroll",
        "folder": report.printable(r.folder),
        "people": rows,
        "summary": {"people": len(r.people), "enrolled": done, "not_enrolled": len(r.people) - done},
        "model": _model(r.model),
    }
    return data, lines


def _enrolled_line(p: PersonEnrolled) -> str:
    """One person of an enrolled tree."""
    if not p.registered:
        return f"NOT ENROLLED {p.name!r}: {p.reason}."
    rejected = ", ".join(f"{r} x{c}" for r, c in p.rejected.most_common())
    line = f"{'Re-enrolled' if p.replaced else 'Enrolled'} {p.name!r} from {p.samples} samples"
    line += f"; rejected: {rejected}" if rejected else ""
    return line + (f". WARNING: {p.warning}." if p.warning else ".")


def _listed(r: Listed) -> Rendered:
    rows = [
        {"name": p.name, "samples": p.n_samples, "created": str(p.created), "fingerprint": p.fingerprint}
        for p in r.people
    ]
    lines = [f"{len(rows)} registered" + (":" if rows else " (register someone first).")]
    lines += [
        f"  {display_name(p.name):<24} {count(p.n_samples, 'sample'):<11} registered {p.created}  model {p.fingerprint}"
        for p in r.people
    ]
    return {"action": "list", "people": rows}, lines


def _checked(r: Checked) -> Rendered:
    index = (
        f"The search index {r.index_path} was damaged ({r.index_problem}); rebuilt it from the database."
        if r.index_problem
        else f"The search index {r.index_path} matched the database; rebuilt it."
    )
    search_index = {"path": r.index_path, "damaged": r.index_problem is not None, "problem": r.index_problem}
    return (
        {"action": "check", "intact": True, "templates": r.templates, "search_index": search_index},
        [f"The gallery {r.db_path} is intact ({count(r.templates, 'template')}).", index],
    )


def _deleted(r: Deleted) -> Rendered:
    return {"action": "delete", "name": r.name, "deleted": True}, [f"Deleted {r.name!r}."]


def _reenrolled(r: Reenrolled) -> Rendered:
    lines = [f"Recomputed the templates of {count(r.people, 'person', 'people')} with {r.model.source}."]
    if r.imported_kept:
        lines.append(
            f"Kept {count(len(r.imported_kept), 'imported person', 'imported people')} as they are (e.g. {r.imported_kept[0]!r}): the seed "
            f"stored no photos to recompute them from; register them again with --replace to do so."
        )
    data = {"action": "reenroll", "people": r.people, "imported_kept": r.imported_kept, "model": _model(r.model)}
    return data, lines


def _seed_imported(r: SeedImported) -> Rendered:
    line = (
        f"Imported {count(r.people, 'person', 'people')} from {r.path}. Their templates are taken as made by the loaded "
        f"model and cannot be recomputed (the seed kept no photos): if the seed used another "
        f"model, register them again with `register --name NAME --replace`."
    )
    return {"action": "import-seed", "people": r.people, "model": _model(r.model)}, [line]


def _liveness_checked(r: LivenessChecked) -> Rendered:
    live = r.liveness
    line = (
        f"LIVENESS {'PASSED' if live.passed else 'FAILED'}: {live.reason} "
        f"(prompts {', '.join(live.prompts)}; {live.frames} frames)."
    )
    return {"action": "liveness", **live.to_dict()}, [line]


_RENDERERS: dict[type, Callable[[Any], Rendered]] = {
    Registered: _registered,
    LivenessRefused: _liveness_refused,
    Verified: _verified,
    Identified: _identified,
    FacesFound: _faces_found,
    Enrolled: _enrolled,
    Listed: _listed,
    Checked: _checked,
    Deleted: _deleted,
    Reenrolled: _reenrolled,
    SeedImported: _seed_imported,
    LivenessChecked: _liveness_checked,
}


# ----------------------------------------------------------------------------- shared parts


def _match(match: Match | None) -> dict | None:
    return None if match is None else {"name": match.name, "score": round(float(match.score), 4)}


def _model(info: ModelInfo) -> dict:
    """The "model" object: which model decided, and where its thresholds come from."""
    cal = info.calibration
    return {
        "source": info.source,
        "runtime": info.runtime,
        "fingerprint": info.fingerprint,
        "crop": info.crop,
        "threshold_source": info.threshold_source,
        "calibration": None
        if cal is None
        else {
            "source": cal.source,
            "benchmark_data": cal.benchmark_data,
            "comparison": cal.comparison(),
            "impostor_comparisons": cal.impostors,
        },
    }
