"""The model's own validation record: the single-image pairs of held-out people scored when the checkpoint was
written, kept in it (``validation``, one of `checkpoint.INFERENCE_KEYS`, so the slim checkpoint and the ONNX export
carry it) and used to check every threshold a calibration table gives.

Why: a calibration table needs only the model's fingerprint, which the app prints, so anyone can hand-make one
(``--calibration``) whose impostor scores are low and whose thresholds let strangers in. The record is an
independent witness from the same model: its impostor pairs are comparisons of single images, whose tail is as
heavy as any kind's (`faceid.model.heldout`), so when far more of them clear a threshold than the table's rate
allows (the gallery's rule: `gallery_pairs.CONTRADICTION_FACTOR` times its 95% bound, by the lower end of the
record's own 95% interval), the table is not a calibration of this model, and the decision is refused.

The record is a `Calibration` of kind 1 vs 1 (one schema, one validator: `Calibration.from_dict`), built by
training's validation from its held-out pair set (never from benchmark files).
"""

from __future__ import annotations

import numpy as np

from ..core.errors import FaceIDError
from .calibration import Calibration, Threshold, far_for_fpir
from .gallery_pairs import contradicts


def validation_record(scores: np.ndarray, issame: np.ndarray, name: str) -> Calibration | None:
    """The record of a scored pair set of held-out people (None without both genuine and impostor pairs)."""
    scores, issame = np.asarray(scores, dtype=np.float64), np.asarray(issame, dtype=bool)
    if not issame.any() or issame.all():
        return None
    return Calibration.from_scores(scores[issame], scores[~issame], 1, 1, f"the {name} pairs scored in training")


def read_record(data: dict | None, where: str) -> Calibration | None:
    """A stored record, validated like any table (None when the model has none)."""
    return None if data is None else Calibration.from_dict(data, where=f"{where} (its validation record)")


def check_with_record(threshold: Threshold, record: Calibration | None) -> Threshold:
    """A table's threshold against the model's validation record: returned as it is, or refused (one sentence)."""
    if record is None or threshold.source not in ("table", "gallery") or threshold.target is None:
        return threshold
    if threshold.rate_high is None:
        return threshold
    n = threshold.gallery_size
    far = threshold.target if n is None else far_for_fpir(threshold.target, n)
    claimed = threshold.rate_high if n is None else far_for_fpir(min(threshold.rate_high, 1 - 1e-12), n)
    rate, low, _ = record.far_at(threshold.value)
    k = int(round(rate * record.impostors))
    if contradicts(k, low, max(claimed, far)):
        raise FaceIDError(
            f"The calibration table is contradicted by the model's own validation record: {k:,} of its "
            f"{record.impostors:,} impostor pairs ({record.source}) score at or above the threshold "
            f"{threshold.value:.3f}, at least {low:.2g} of them where the table allows {max(claimed, far):.2g}; it "
            f"is not a calibration of this model: calibrate it (evaluate_model.py --calibrate) or pass --threshold.",
            "calibration",
            "threshold",
        )
    return threshold
