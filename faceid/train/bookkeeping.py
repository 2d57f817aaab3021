"""Where a training run stands: its phase and its bookkeeping (counters, history, best, latest validation).

The bottom module of `faceid.train`'s trainer parts: the trainer advances these, `state` saves and restores
them through the checkpoint's `TrainingState`, `report` prints them. Plain data only, so each part can
import them without importing the others.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Phase:
    """A stretch of training with one optimizer/schedule: phase 0 from train_model.py, 1.. from --lr."""

    index: int = 0
    start_epoch: int = 0
    end_epoch: int = 0
    lr: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def fresh_progress() -> dict:
    """An epoch's running totals before its first step (loss_sum / steps / images / seconds, and the images the
    GPU decode handed to the CPU decoder)."""
    return {"loss_sum": 0.0, "steps": 0, "images": 0, "seconds": 0.0, "cpu_decoded": 0}


@dataclass
class Bookkeeping:
    """What a run has done and recorded so far. Saved in every checkpoint; an exact resume and a next phase
    both carry it on, so the history, the best checkpoint's record and the step count span all phases."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps completed, all phases
    step_in_epoch: int = 0  # steps into the current epoch (non-zero only after an interruption)
    history: list[dict] = field(default_factory=list)  # one record per epoch
    best: dict = field(default_factory=dict)  # which epoch is best_face_model.pth, by what
    metrics: dict = field(default_factory=dict)  # the latest validation
    calibration: dict | None = None  # summary of the latest table (history, summary line)
    calibration_table: dict | None = None  # Calibration.to_dict() of the latest validation
    validation_record: dict | None = None  # the held-out pairs it scored (`faceid.model.validation_record`)
    progress: dict = field(default_factory=fresh_progress)  # the current epoch's totals (kept across a resume)
