"""Model selection: which set and metric pick best_face_model.pth, and whether an epoch beats the best so far.

Benchmark files (.bin) are test data: selecting on one needs --tune-on-benchmark (stamped in the checkpoint's
calibration); without held-out people and without .bin files, the closed-set accuracy selects and no
calibration table is written. Every rank decides alike (no collective), so a refusal stops all of them.
"""

from __future__ import annotations

from ..core.errors import FaceIDError
from .config import TrainConfig
from .validation import LOWER_IS_BETTER


def choose_selection(cfg: TrainConfig, has_heldout: bool, benchmarks: list[str]) -> tuple[str, str]:
    """(set, metric) that picks the best checkpoint; `benchmarks`: the names of the .bin files validated on."""
    names = (["heldout"] if has_heldout else []) + benchmarks
    wanted = cfg.select_set if cfg.select_set in names else ("heldout" if "heldout" in names else None)
    if wanted is None and benchmarks:
        wanted = benchmarks[0]
    if wanted in benchmarks and not cfg.tune_on_benchmark:
        why = (
            "there are no held-out identities (held-out fraction 0)"
            if "heldout" not in names
            else f"the selection set {wanted} is a benchmark file"
        )
        raise FaceIDError(
            f"Model selection would read the benchmark {wanted} because {why}; keep identities "
            f"held out (e.g. a fraction of 0.1) or allow tuning on test data (stamped in the "
            f"checkpoint and shown by the app).",
            "holdout_fraction",
            "select_set",
            "tune_on_benchmark",
        )
    if wanted is not None:
        return wanted, cfg.select_metric
    return "closed_set", "accuracy"


def improves(value: float | None, best: dict, selection: tuple[str, str]) -> bool:
    """Whether an epoch whose selection metric is `value` replaces `best` (the record `best_record` made).
    Nothing to select on (no held-out people, no .bin, no closed-set split): the latest epoch is "best"."""
    old = best.get("value")
    lower = selection[1] in LOWER_IS_BETTER
    return value is None or old is None or (value < old if lower else value > old)


def best_record(selection: tuple[str, str], value: float | None, epoch: int, calibration: dict | None) -> dict:
    """What the run remembers about its best checkpoint (kept in every checkpoint, printed in the summary)."""
    return {
        "set": selection[0],
        "metric": selection[1] if value is not None else "latest epoch",
        "value": value,
        "epoch": epoch,
        "threshold": (calibration or {}).get("threshold"),
    }
