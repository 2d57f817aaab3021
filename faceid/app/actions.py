"""The face-ID app: an interactive menu on stdin/stdout and the same actions as subcommands.

``faceid_app.py`` with no subcommand opens the menu (register / verify / identify / list / delete /
reenroll / quit), read with ``input()`` so it works in any terminal, over ssh and in tests; EOF quits.
Subcommands (``register --name``, ``verify --name``, ``identify``, ``list``, ``delete --name``,
``reenroll``, ``import-seed --pickle``, ``liveness``) serve scripts, with ``--json`` output.

Exit codes: 0 match / success, 1 no match / rejected (below threshold, nobody identified, liveness
failed), 2 error (bad input, no camera, no usable face, no weights, ...), 130 interrupted.

Every action reads frames through `faceid.camera.open_source`, finds the largest face, passes it through
the quality gate (`faceid.quality`) and embeds it with the crop the model's checkpoint records.
Progress goes to stderr, results to stdout, so ``--json`` output stays one parseable object.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .camera import FrameSource, Preview, display_available, open_source
from ..core import report
from ..core.errors import EXIT_OK, FaceIDError
from ..model.calibration import Threshold
from ..model.embeddings import template_of
from .quality import QualityThresholds, assess

EXIT_NO_MATCH = 1
LIVE_FRAME_LIMIT = 300  # headless camera: give up after this many frames rather than wait forever


@dataclass
class Outcome:
    """What an action produced: its exit code, a JSON-able record and the lines a person reads."""

    code: int
    data: dict
    lines: list[str] = field(default_factory=list)


@dataclass
class Sample:
    crop: np.ndarray
    embedding: np.ndarray
    metrics: dict


def clean_name(raw: str | None, new: bool = False) -> str:
    """A person's name as the gallery stores it (NFC, trimmed); its rules: not empty, no control characters,
    and for a `new` name (register) no invisible or text-direction characters (`gallery.validate_name`).

    Names are only data - the gallery keys files by id - so quotes, slashes and any script are allowed."""
    from ..gallery.names import validate_name

    return validate_name(raw if raw is not None else "", new=new)


class App:
    """One session: parsed options, the lazily loaded model and the gallery location."""

    def __init__(self, args: argparse.Namespace, accelerate: bool = False):
        self.args = args
        self.accelerate = accelerate  # worth its start-up cost in long sessions (the menu, liveness)
        self._pipeline = None
        self._source: FrameSource | None = None  # opened early by check_source, read by the action
        self.preview = Preview(enabled=not args.no_preview and display_available())
        self.limits = QualityThresholds()
        # (frame, box) of the last accepted sample, to show the verdict on
        self.last_view: tuple[np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ resources
    @property
    def pipeline(self):
        """The detector + embedder, loaded on first use (list and delete never pay for it)."""
        if self._pipeline is None:
            import torch

            from ..model.face import FacePipeline
            from ..model.embedder import optimized_for_cpu

            torch.set_num_threads(self.args.threads)
            embedder = load_model(self.args)
            cal = embedder.calibration
            note = (
                f"calibrated on {cal.source}" + (" (BENCHMARK DATA)" if cal.benchmark_data else "")
                if cal is not None
                else "no calibration table: decisions are uncalibrated"
            )
            report.note(
                f"model: {embedder.source} (crop {embedder.spec.crop}, fingerprint {embedder.fingerprint}, {note})"
            )
            if self.accelerate:
                embedder, note = optimized_for_cpu(embedder)
                report.note(note)
            self._pipeline = FacePipeline(embedder)
        return self._pipeline

    def gallery(self):
        from ..gallery.store import Gallery

        return Gallery.open(self.args.data_dir)

    def threshold(self, gallery_size: int | None = None) -> Threshold:
        """verify (gallery_size None): the table's threshold at --far per comparison; identify: at --fpir for a
        gallery of `gallery_size` people. --threshold overrides both. Without a table: the checkpoint's single
        threshold, else the default, each labelled uncalibrated."""
        a, e = self.args, self.pipeline.embedder
        if a.threshold is not None:
            return Threshold(float(a.threshold), f"threshold {a.threshold:.3f} from --threshold", "option")
        if e.calibration is not None:
            return (
                e.calibration.threshold_for_far(a.far)
                if gallery_size is None
                else e.calibration.threshold_for_fpir(a.fpir, gallery_size)
            )
        scope = "" if gallery_size is None else f", not adjusted for {gallery_size:,} people"
        if e.threshold_calibrated:
            return Threshold(
                e.threshold,
                f"threshold {e.threshold:.3f} UNCALIBRATED: the checkpoint has no "
                f"calibration table, only a 1:1 threshold from single images{scope}",
                "checkpoint",
            )
        return Threshold(
            e.threshold,
            f"threshold {e.threshold:.3f} is the UNCALIBRATED default{scope}: use a "
            f"calibrated checkpoint (--model), a --calibration file, or --threshold",
            "default",
        )

    def model_info(self) -> dict:
        e = self.pipeline.embedder
        cal = e.calibration
        return {
            "source": e.source,
            "runtime": e.runtime,
            "fingerprint": e.fingerprint,
            "crop": e.spec.crop,
            "threshold_source": "option"
            if self.args.threshold is not None
            else ("table" if cal is not None else "checkpoint" if e.threshold_calibrated else "default"),
            "calibration": None
            if cal is None
            else {
                "source": cal.source,
                "benchmark_data": cal.benchmark_data,
                "comparison": f"template of {cal.samples} vs probe of {cal.probe_samples}",
                "impostor_comparisons": cal.impostors,
            },
        }

    def gallery_size(self, gallery) -> int:
        """People identify compares a probe with: those registered with the loaded model."""
        return int(gallery.fingerprints().get(self.pipeline.embedder.fingerprint, 0))

    # ------------------------------------------------------------------ frames -> samples
    def collect(self, n: int, key: str, per_key: int = 1) -> tuple[list[Sample], list[str]]:
        """Read frames until `n` samples pass the quality gate. Headless: take them as they come, leaving
        `--sample-gap` frames between samples of a video or camera; with a preview window: a press of `key`
        takes `per_key`. Photos (an image or a folder) give one sample each and no gap; when they run out
        with at least one good sample, those are used (one photo is enough) and a note says so."""
        pipe, args = self.pipeline, self.args
        source = self.take_source()
        samples: list[Sample] = []
        notes: list[str] = []
        rejections: Counter[str] = Counter()
        skip, last_reason, armed = 0, None, 0
        unit = "photos" if source.stills else "frames"
        try:
            for frame in source:
                self._note_skipped(source, notes)
                if skip:
                    skip -= 1
                    continue
                result = pipe.analyze(frame, embed=False)
                for note in result.notes:
                    if note not in notes and note != "no face found":
                        notes.append(note)
                        report.note(f"note: {note}")
                quality = assess(frame, result.face, self.limits) if result.face is not None else None
                reason = "no face found" if quality is None else (None if quality.ok else quality.summary())
                pressed = self.preview.show(
                    frame,
                    None if result.face is None else result.face.box,
                    (f"{len(samples)}/{n} samples", reason or f"press '{key}'"),
                    ok=reason is None,
                )
                if pressed == "q":
                    raise FaceIDError("Cancelled from the preview window.", exit_code=EXIT_NO_MATCH)
                if pressed == key:
                    armed = per_key
                if self.preview.enabled and not armed:
                    continue
                if reason is not None:
                    rejections[reason] += 1
                    if reason != last_reason:
                        report.note(f"{unit[:-1]} rejected: {reason}")
                    last_reason = reason
                    continue
                # reason is None only for a face that was assessed and passed
                assert result.face is not None and quality is not None
                self.last_view = (frame, result.face.box)
                crop = pipe.crop(frame, result.face)
                samples.append(Sample(crop=crop, embedding=pipe.embed_crops([crop])[0], metrics=quality.metrics))
                last_reason, armed = None, max(armed - 1, 0)
                report.note(
                    f"sample {len(samples)}/{n} ok (face {quality.metrics['face_px']:.0f} px, "
                    f"sharpness {quality.metrics['sharpness']:.0f}, yaw {quality.metrics['yaw_deg']:+.0f} deg)"
                )
                if len(samples) >= n:
                    break
                skip = 0 if source.stills else args.sample_gap
        finally:
            source.close()
        self._note_skipped(source, notes)
        if len(samples) < n and source.stills and samples and source.exhausted and not self.preview.enabled:
            note = (
                f"used {len(samples)} sample{'s' if len(samples) > 1 else ''} (asked for {n}): that is every "
                f"usable photo in {source.description}"
            )
            notes.append(note)
            report.note(f"note: {note}")
        elif len(samples) < n:
            raise FaceIDError(self._shortfall(source, len(samples), n, rejections, key, unit))
        return samples, notes

    def _shortfall(self, source, got: int, n: int, rejections: Counter, key: str, unit: str) -> str:
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
                if source.frames_read and self.preview.enabled
                else f"no {unit} were read"
            )
        skipped = f"; {len(source.skipped)} unreadable files skipped" if source.skipped else ""
        return (
            f"Got only {got} of {n} good samples before {ended} from {source.description}; rejected "
            f"{unit}: {why}{skipped}."
        )

    @staticmethod
    def _note_skipped(source, notes: list[str]) -> None:
        """Say once, as it happens, which folder file was skipped and why (also kept in the notes)."""
        for name, reason in source.skipped:
            note = f"skipped {name}: {reason.rstrip('.')}"
            if note not in notes:
                notes.append(note)
                report.note(f"note: {note}")

    def check_source(self) -> None:
        """Open the source before spending seconds on loading the model, so a missing file, an unreadable
        image or an absent camera fails at once. It stays open for the action that reads it (`take_source`):
        opening a camera twice is slow on some drivers."""
        if self._source is None:
            self._source = open_source(
                self.args.source, max_frames=self._frame_limit(), start_frame=self.args.start_frame
            )

    def take_source(self):
        """The source opened by `check_source`, else a freshly opened one; the caller closes it."""
        source, self._source = self._source, None
        if source is None:
            source = open_source(self.args.source, max_frames=self._frame_limit(), start_frame=self.args.start_frame)
        return source

    def close(self) -> None:
        """End of an action: a source opened but not read, and the preview window."""
        if self._source is not None:
            self._source.close()
            self._source = None
        self.preview.close()

    def _frame_limit(self) -> int | None:
        if self.args.max_frames is not None:
            return self.args.max_frames
        live = str(self.args.source).strip().isdigit()
        return LIVE_FRAME_LIMIT if live and not self.preview.enabled else None

    def probe(self, key: str) -> tuple[Sample, list[str], dict | None]:
        """One good probe face for verify/identify; with --liveness, from a passed head-turn challenge."""
        if not self.args.liveness:
            n = self.args.probe_samples
            samples, notes = self.collect(n, key, per_key=n)
            probe = template_of(np.stack([s.embedding for s in samples]))
            return Sample(samples[0].crop, probe, samples[0].metrics), notes, None
        result = self.run_liveness()
        if not result.passed:
            raise _Rejected(
                Outcome(
                    EXIT_NO_MATCH,
                    {"liveness": result.to_dict(), "match": False},
                    [f"LIVENESS FAILED: {result.reason}."],
                )
            )
        start = result.start
        sample = Sample(crop=start.crop, embedding=start.embedding, metrics=result.start_metrics)
        return sample, list(start.notes), result.to_dict()

    def run_liveness(self):
        from .liveness import ChallengeConfig, run_challenge

        args = self.args
        with self.take_source() as src:

            def on_frame(frame, result, instruction):
                box = None if result.face is None else result.face.box
                return self.preview.show(frame, box, (instruction,)) == "q"

            return run_challenge(
                src,
                self.pipeline,
                ChallengeConfig(prompts=args.challenge_prompts),
                live=src.live,
                quality=self.limits,
                on_prompt=lambda text: report.note(f">>> {text}"),
                on_frame=on_frame,
            )

    # ------------------------------------------------------------------ actions
    def register(self, name: str, replace: bool = False) -> Outcome:
        name = clean_name(name, new=True)
        with self.gallery() as g:  # gallery, then source, then the network: the cheap checks fail first
            if g.get(name) is not None and not replace:
                raise FaceIDError(f"{name!r} is already registered; use --replace to register them again.")
        self.check_source()
        fp = self.pipeline.embedder.fingerprint
        with self.gallery() as g:
            g.check_model(fp, exclude=name)
        lines, liveness, live_face = [], None, None
        if self.args.liveness:
            result = self.run_liveness()
            liveness = result.to_dict()
            if not result.passed:
                return Outcome(
                    EXIT_NO_MATCH,
                    {"action": "register", "name": name, "registered": False, "liveness": liveness},
                    [f"LIVENESS FAILED: {result.reason}."],
                )
            live_face = result.start.embedding
        n = self.args.samples
        report.note(f"registering {name!r}: taking {n} good samples from {self.args.source}")
        samples, notes = self.collect(n, "c")
        embeddings = np.stack([s.embedding for s in samples]).astype(np.float32)
        template = template_of(embeddings)
        if live_face is not None and float(template @ live_face) < self.threshold().value:
            # the samples are taken after the challenge: they must show the face that passed it
            return Outcome(
                EXIT_NO_MATCH,
                {"action": "register", "name": name, "registered": False, "liveness": liveness},
                [
                    f"LIVENESS FAILED: the registered face (score {float(template @ live_face):.3f}) is not "
                    f"the one that passed the head-turn challenge."
                ],
            )
        warning = None
        with self.gallery() as g:
            other = g.best_other_match(template, fp, exclude_name=name)
            duplicate = self.threshold(max(1, self.gallery_size(g)))  # as identify would decide it
            if other is not None and other.score >= duplicate.value:
                warning = (
                    f"this face already matches {other.name!r} (score {other.score:.3f} >= "
                    f"{duplicate.text}); check that they are different people"
                )
            person = g.register(name, [s.crop for s in samples], embeddings, fp, replace=replace)
        spread = float((embeddings @ template).min())
        lines.append(
            f"Registered {person.name!r} from {len(samples)} samples (lowest sample-to-template cosine {spread:.3f})."
        )
        if warning:
            lines.append(f"WARNING: {warning}.")
        data = {
            "action": "register",
            "name": person.name,
            "registered": True,
            "samples": len(samples),
            "min_sample_cosine": round(spread, 4),
            "warning": warning,
            "notes": notes,
            "similar_to": None if other is None else {"name": other.name, "score": round(other.score, 4)},
            "liveness": liveness,
            "model": self.model_info(),
        }
        return Outcome(EXIT_OK, data, lines)

    def verify(self, name: str) -> Outcome:
        name = clean_name(name)
        with self.gallery() as g:
            if g.get(name) is None:
                raise FaceIDError(f"No one named {name!r} is registered (see the list action).")
            self.check_source()
            fp = self.pipeline.embedder.fingerprint
            g.check_model(fp)
        sample, notes, liveness = self.probe("v")
        with self.gallery() as g:
            score = float(g.verify(name, sample.embedding, fp))
            other = g.best_other_match(sample.embedding, fp, exclude_name=name)
        decision = self.threshold()
        threshold = decision.value
        match = score >= threshold
        verdict = "MATCH" if match else "NO MATCH"
        lines = [f"{verdict}: {name!r} score {score:.3f} {'>=' if match else '<'} {threshold:.3f} ({decision.text})."]
        if other is not None:
            lines.append(f"closest other person: {other.name!r} {other.score:.3f}")
        lines += [f"note: {n}" for n in notes]
        self.show_verdict(f"{verdict} {name} {score:.3f} (threshold {threshold:.3f})", match)
        data = {
            "action": "verify",
            "name": name,
            "match": match,
            "score": round(score, 4),
            **decision.decision_fields(),
            "closest_other": None if other is None else {"name": other.name, "score": round(float(other.score), 4)},
            "quality": sample.metrics,
            "notes": notes,
            "liveness": liveness,
            "model": self.model_info(),
        }
        return Outcome(EXIT_OK if match else EXIT_NO_MATCH, data, lines)

    def identify(self) -> Outcome:
        with self.gallery() as g:
            if not g.fingerprints():
                raise FaceIDError("No one is registered yet; register someone first.")
            self.check_source()
            g.check_model(self.pipeline.embedder.fingerprint)
        sample, notes, liveness = self.probe("v")
        with self.gallery() as g:
            matches = g.identify(sample.embedding, self.pipeline.embedder.fingerprint, k=self.args.top_k)
            decision = self.threshold(self.gallery_size(g))
        threshold = decision.value
        best = matches[0] if matches and matches[0].score >= threshold else None
        lines = [
            f"IDENTIFIED: {best.name!r} score {best.score:.3f} >= {threshold:.3f} ({decision.text})."
            if best
            else f"UNKNOWN: nobody scored at or above {threshold:.3f} ({decision.text})."
        ]
        lines += [
            f"  {i}. {m.name:<24} {m.score:.3f}{'  <- above threshold' if m.score >= threshold else ''}"
            for i, m in enumerate(matches, 1)
        ]
        lines += [f"note: {n}" for n in notes]
        label = f"{best.name} {best.score:.3f}" if best else f"unknown (best {matches[0].score:.3f})"
        self.show_verdict(f"{label}, threshold {threshold:.3f}", best is not None)
        data = {
            "action": "identify",
            "identified": None if best is None else best.name,
            "matches": [{"name": m.name, "score": round(float(m.score), 4)} for m in matches],
            **decision.decision_fields(),
            "quality": sample.metrics,
            "notes": notes,
            "liveness": liveness,
            "model": self.model_info(),
        }
        return Outcome(EXIT_OK if best else EXIT_NO_MATCH, data, lines)

    def show_verdict(self, text: str, ok: bool) -> None:
        """With a preview window: the verdict (score and threshold) drawn on the probe frame for 2 s."""
        if self.preview.enabled and self.last_view is not None:
            self.preview.show(self.last_view[0], self.last_view[1], (text,), ok=ok, wait_ms=2000)

    def list_people(self) -> Outcome:
        from ..gallery.names import display_name

        with self.gallery() as g:
            people = g.people()
        rows = [
            {"name": p.name, "samples": p.n_samples, "created": str(p.created), "fingerprint": p.fingerprint}
            for p in people
        ]
        lines = [f"{len(rows)} registered" + (":" if rows else " (register someone first).")]
        lines += [
            f"  {display_name(r['name']):<24} {r['samples']} samples  registered {r['created']}  model {r['fingerprint']}"
            for r in rows
        ]
        return Outcome(EXIT_OK, {"action": "list", "people": rows}, lines)

    def check(self) -> Outcome:
        """The gallery's full integrity check (it also runs by itself after a crash): no model needed."""
        with self.gallery() as g:
            problems = g.check()
            count = sum(g.fingerprints().values())
        if problems:
            raise FaceIDError(
                f"The gallery {g.db_path} is damaged: {problems[0]}"
                f"{f' (and {len(problems) - 1} more problems)' if len(problems) > 1 else ''}; "
                f"restore a backup, or delete and re-register the people concerned."
            )
        return Outcome(
            EXIT_OK,
            {"action": "check", "intact": True, "templates": count},
            [f"The gallery {g.db_path} is intact ({count} templates); search index rebuilt."],
        )

    def delete(self, name: str) -> Outcome:
        name = clean_name(name)
        with self.gallery() as g:
            if not g.delete(name):
                raise FaceIDError(f"No one named {name!r} is registered (see the list action).")
        return Outcome(EXIT_OK, {"action": "delete", "name": name, "deleted": True}, [f"Deleted {name!r}."])

    def reenroll(self) -> Outcome:
        self.gallery().close()  # a damaged or foreign gallery fails before the network loads
        pipe = self.pipeline
        side = pipe.spec.crop_size

        def embed_stored(crops: list[np.ndarray]) -> np.ndarray:
            bad = [c.shape for c in crops if c.shape[:2] != (side, side)]
            if bad:
                raise FaceIDError(
                    f"Stored crops are {bad[0][0]}x{bad[0][1]} but this model's {pipe.spec.crop!r} "
                    f"crop is {side}x{side}; register these people again."
                )
            return pipe.embed_crops(crops)

        with self.gallery() as g:
            count = g.reenroll(embed_stored, pipe.embedder.fingerprint, progress=not self.args.json)
            imported = [p.name for p in g.people() if p.n_samples == 0]
        lines = [f"Recomputed the templates of {count} people with {pipe.embedder.source}."]
        if imported:
            lines.append(
                f"Kept {len(imported)} imported people as they are (e.g. {imported[0]!r}): the seed stored "
                f"no photos to recompute them from; register them again with --replace to do so."
            )
        return Outcome(
            EXIT_OK,
            {"action": "reenroll", "people": count, "imported_kept": imported, "model": self.model_info()},
            lines,
        )

    def import_seed(self, pickle_path: str, replace: bool = False) -> Outcome:
        path = Path(pickle_path).expanduser()
        if not path.is_file():
            raise FaceIDError(f"Seed pickle not found: {path}.")
        from ..gallery.seed import load_seed_pickle

        load_seed_pickle(path)  # a bad pickle or gallery fails here, before seconds of model loading
        self.gallery().close()
        with self.gallery() as g:
            count = g.import_seed_pickle(path, self.pipeline.embedder.fingerprint, replace=replace)
        return Outcome(
            EXIT_OK,
            {"action": "import-seed", "people": count, "model": self.model_info()},
            [
                f"Imported {count} people from {path}. Their templates are taken as made by the loaded "
                f"model and cannot be recomputed (the seed kept no photos): if the seed used another "
                f"model, register them again with `register --name NAME --replace`."
            ],
        )

    def liveness(self) -> Outcome:
        self.check_source()
        result = self.run_liveness()
        lines = [
            f"LIVENESS {'PASSED' if result.passed else 'FAILED'}: {result.reason} "
            f"(prompts {', '.join(result.prompts)}; {result.frames} frames)."
        ]
        return Outcome(EXIT_OK if result.passed else EXIT_NO_MATCH, {"action": "liveness", **result.to_dict()}, lines)


class _Rejected(Exception):
    """Carries an Outcome out of a helper when a check (liveness) rejects the attempt."""

    def __init__(self, outcome: Outcome):
        super().__init__(outcome.lines[0] if outcome.lines else "rejected")
        self.outcome = outcome


def load_model(args: argparse.Namespace):
    """--model, else --weights, else ./checkpoints/best_face_model.pth if present, else VGGFace2 weights
    ($FACEID_WEIGHTS, torch's cache, or a download unless --offline); on the --runtime runtime.choose_runtime picks."""
    from ..model.runtime import choose_runtime

    embedder, note = choose_runtime(
        args.model,
        args.weights,
        args.crop,
        args.device,
        download=not args.offline,
        runtime=args.runtime,
        threads=args.threads,
    )
    report.note(f"network: {note}")
    if args.calibration is not None:  # a table measured for these weights (evaluate_model.py --calibrate)
        from dataclasses import replace

        from ..model.calibration import read_calibration_file

        embedder = replace(embedder, calibration=read_calibration_file(args.calibration, embedder.fingerprint))
    return embedder


def run_action(app: App, action: str, args: argparse.Namespace) -> Outcome:
    try:
        if action == "register":
            return app.register(args.name, replace=args.replace)
        if action in ("verify", "delete"):
            return getattr(app, action)(args.name)
        if action == "import-seed":
            return app.import_seed(args.pickle, replace=args.replace)
        return {
            "identify": app.identify,
            "list": app.list_people,
            "reenroll": app.reenroll,
            "liveness": app.liveness,
            "check": app.check,
        }[action]()
    except _Rejected as rejected:
        rejected.outcome.data.setdefault("action", action)
        return rejected.outcome
