"""Training curves as PNGs (written atomically): loss, closed-set accuracy, verification metrics per epoch."""

from __future__ import annotations

import os
from pathlib import Path

from ..core.fileio import atomic_savefig

VERIFICATION_METRICS = (
    ("auc", "ROC AUC"),
    ("tar@far=0.001", "TAR @ FAR 1e-3"),
    ("tar@far=0.01", "TAR @ FAR 1e-2"),
    ("eer", "EER (lower is better)"),
)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_history(history: list[dict], out_dir: str | os.PathLike) -> list[Path]:
    """history: the per-epoch records the trainer keeps. Writes curves_{loss,accuracy,verification}.png."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    epochs = [h["epoch"] for h in history]
    written = []

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [h.get("train_loss") for h in history], "o-", label="train")
    if any("closed_set" in h for h in history):
        ax.plot(epochs, [h.get("closed_set", {}).get("loss") for h in history], "s-", label="closed-set val")
    ax.set(xlabel="epoch", ylabel="loss", title="Loss")
    ax.grid(alpha=0.3)
    ax.legend()
    written.append(_save(plt, fig, out_dir / "curves_loss.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [h.get("closed_set", {}).get("accuracy") for h in history], "o-")
    ax.set(xlabel="epoch", ylabel="accuracy", title="Closed-set accuracy (80/20 split, training identities)")
    ax.grid(alpha=0.3)
    written.append(_save(plt, fig, out_dir / "curves_accuracy.png"))

    sets = sorted({k for h in history for k, v in h.items() if isinstance(v, dict) and "auc" in v})
    fig, axes = plt.subplots(1, len(VERIFICATION_METRICS), figsize=(4 * len(VERIFICATION_METRICS), 3.6))
    for ax, (key, title) in zip(axes, VERIFICATION_METRICS):
        for name in sets:
            ax.plot(epochs, [h.get(name, {}).get(key) for h in history], "o-", label=name)
        ax.set(xlabel="epoch", title=title)
        ax.grid(alpha=0.3)
    if sets:
        axes[0].legend()
    written.append(_save(plt, fig, out_dir / "curves_verification.png"))
    return written


def _save(plt, fig, path: Path) -> Path:
    atomic_savefig(path, fig)
    plt.close(fig)
    return path
