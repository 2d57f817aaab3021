"""One app session: the parsed options and the resources the actions share.

The resources are opened in the order that makes a bad start fail fast and cheap: the gallery (a damaged or
foreign one fails in milliseconds), then the frame source (`check_source`: a missing file or an absent camera
fails before the model loads), and only then the model, loaded on first use through the pipeline factory, so
``list`` and ``delete`` never pay for it (nor import torch).

The factory is the model choice: `load_pipeline` by default (``--model`` / ``--weights`` / ... through
`load_model`); a caller that already holds a loaded model hands the session a factory that returns it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from ..core import report
from ..core.device import describe_device
from ..core.errors import FaceIDError
from .camera import FrameSource, Preview, display_available, open_source
from .gallery_access import Gallery
from .outcome import LIVE_FRAME_LIMIT
from .quality import QualityThresholds

if TYPE_CHECKING:
    from ..model.embedder import Embedder
    from ..model.face import FacePipeline
    from ..synthetic.detector_model import SyntheticFaceDetector

PipelineFactory = Callable[[argparse.Namespace], "FacePipeline"]
LONG_SESSIONS = (None, "liveness")  # the menu and the challenge: worth tracing the network for the CPU


def load_model(args: argparse.Namespace) -> Embedder:
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
    report.note(f"network: {note}, device {describe_device(embedder.device)}")
    if args.calibration is not None:  # a table measured for these weights (evaluate_model.py --calibrate)
        from dataclasses import replace

        from ..model.calibration import read_calibration_file

        embedder = replace(embedder, calibration=read_calibration_file(args.calibration, embedder.fingerprint))
    return embedder


def load_pipeline(args: argparse.Namespace) -> FacePipeline:
    """The real model choice (`load_model`) on --threads CPU threads, with the face detector that goes with it
    (`face.detector_for`: an export with its detector files runs without importing torch)."""
    from ..model.face import FacePipeline, detector_for

    embedder = load_model(args)
    detector = detector_for(embedder, args.threads)
    if "torch" in (embedder.runtime, detector.runtime):
        import torch

        torch.set_num_threads(args.threads)
    report.note(f"detector: MTCNN on {detector.runtime}")
    return FacePipeline(embedder, detector)


class Session:
    """Parsed options and the resources of one session: the gallery, the frame source, the preview window and
    the detector + embedder pipeline. The menu runs many actions in one session; a subcommand runs one."""

    def __init__(self, args: argparse.Namespace, pipeline_factory: PipelineFactory = load_pipeline):
        self.args = args
        self.accelerate = args.action in LONG_SESSIONS  # a one-off trace pays back over many embeddings
        self.preview = Preview(enabled=not args.no_preview and display_available())
        self.limits = QualityThresholds()
        # (frame, box) of the last accepted sample, to show the verdict on
        self.last_view: tuple[np.ndarray, np.ndarray] | None = None
        self._pipeline_factory = pipeline_factory
        self._pipeline: FacePipeline | None = None
        self._source: FrameSource | None = None  # opened early by check_source, read by the action
        # the menu: where the last action left a video or a folder (`source_used`), and what it read
        self._left_at: tuple[int, bool, bool, str] | None = None
        self._synthetic: SyntheticFaceDetector | None = None

    # ------------------------------------------------------------------ the model
    @property
    def pipeline(self) -> FacePipeline:
        """The detector + embedder, loaded on first use (list and delete never pay for it)."""
        if self._pipeline is None:
            pipeline = self._pipeline_factory(self.args)
            report.note(_model_note(pipeline.embedder))
            if self.accelerate:
                from ..model.embedder import optimized_for_cpu
                from ..model.face import FacePipeline

                embedder, note = optimized_for_cpu(pipeline.embedder)
                report.note(note)
                pipeline = FacePipeline(embedder, pipeline.detector)
            self._pipeline = pipeline
        return self._pipeline

    @property
    def embedder(self) -> Embedder:
        return self.pipeline.embedder

    @property
    def synthetic_detector(self) -> SyntheticFaceDetector | None:
        """--synthetic-detector, loaded on first use on the embedder's device; None without one."""
        path = getattr(self.args, "synthetic_detector", None)
        if path and self._synthetic is None:
            from .synthetic_check import load_detector

            self._synthetic = load_detector(path, self.embedder.device)
            report.note(f"synthetic-face detector: {path} (threshold {self._synthetic.threshold:.3f})")
        return self._synthetic

    # ------------------------------------------------------------------ the gallery
    def gallery(self) -> Gallery:
        """The gallery at --data-dir, opened (and checked) anew for each step; use it in a `with` block."""
        return Gallery.open(self.args.data_dir)

    # ------------------------------------------------------------------ the frame source
    def check_source(self) -> None:
        """Open the source before spending seconds on loading the model, so a missing file, an unreadable
        image or an absent camera fails at once. It stays open for the action that reads it (`take_source`):
        opening a camera twice is slow on some drivers."""
        if self._source is None:
            self._source = self._open_source()

    def take_source(self) -> FrameSource:
        """The source opened by `check_source`, else a freshly opened one; the caller closes it."""
        source, self._source = self._source, None
        return source if source is not None else self._open_source()

    def source_used(self, source: FrameSource) -> None:
        """An action has read `source`. In the menu, the next action goes on from where this one stopped (a
        video's next frame, a folder's next photo), so verify right after register does not score the very
        frames that were registered; `_open_source` says so."""
        if self.args.action is None and not source.live:
            self._left_at = (source.position, source.exhausted, source.one_photo, "photo" if source.stills else "frame")

    def _open_source(self) -> FrameSource:
        first = self.args.start_frame
        if self._left_at is None:
            return open_source(self.args.source, max_frames=self._frame_limit(), start_frame=first)
        position, exhausted, one_photo, unit = self._left_at
        source = self.args.source
        if not (one_photo or exhausted):
            try:
                opened = open_source(source, max_frames=self._frame_limit(), start_frame=position)
            except FaceIDError:  # the last action stopped at the very end
                exhausted = True
            else:
                used = f"{unit}s {first} to {position - 1}" if position - 1 > first else f"{unit} {first}"
                report.note(f"note: continuing {source} at {unit} {position}, after the {used} the last action used")
                return opened
        report.note(
            f"note: reading {source} again (a photo is one frame; the last action read it too)"
            if one_photo
            else f"note: the last action read {source} to its end; reading it again from {unit} {first}"
        )
        return open_source(source, max_frames=self._frame_limit(), start_frame=first)

    def _frame_limit(self) -> int | None:
        if self.args.max_frames is not None:
            return self.args.max_frames
        live = str(self.args.source).strip().isdigit()
        return LIVE_FRAME_LIMIT if live and not self.preview.enabled else None

    # ------------------------------------------------------------------ the preview window
    def show_verdict(self, caption: str, ok: bool) -> None:
        """With a preview window: the verdict (score and threshold) drawn on the probe frame for 2 s."""
        if self.preview.enabled and self.last_view is not None:
            self.preview.show(self.last_view[0], self.last_view[1], (caption,), ok=ok, wait_ms=2000)

    def close(self) -> None:
        """End of an action: a source opened but not read, and the preview window."""
        if self._source is not None:
            self._source.close()
            self._source = None
        self.preview.close()


def _model_note(embedder: Embedder) -> str:
    """The line that says which model decides, and whether its decisions are calibrated."""
    cal = embedder.calibration
    calibrated = (
        f"calibrated on {cal.source}" + (" (BENCHMARK DATA)" if cal.benchmark_data else "")
        if cal is not None
        else "no calibration table: decisions are uncalibrated"
    )
    return f"model: {embedder.source} (crop {embedder.spec.crop}, fingerprint {embedder.fingerprint}, {calibrated})"
