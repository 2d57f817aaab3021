"""Curves of the GAN and detector runs as PNGs (written atomically, like the trainer's `faceid.train.plots`)."""

from __future__ import annotations

import os
from pathlib import Path

from ..core.fileio import atomic_savefig
from ..train.plots import _pyplot


def plot_gan(history: list[dict], curve: list[dict], out_dir: str | os.PathLike) -> Path:
    """curves_gan.png: both losses every few steps, and the quality per epoch where it was measured."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    steps = [c["step"] for c in curve]
    axes[0].plot(steps, [c["loss_d"] for c in curve], label="discriminator")
    axes[0].plot(steps, [c["loss_g"] for c in curve], label="generator")
    axes[0].set(xlabel="step", ylabel="BCE loss", title="Losses")
    axes[0].legend()
    measured = [h for h in history if "frechet" in h]
    axes[1].plot([h["epoch"] for h in measured], [h["frechet"] for h in measured], "o-")
    axes[1].set(xlabel="epoch", title="Fréchet distance (lower is better)")
    axes[2].plot([h["epoch"] for h in measured], [100 * h["face_share"] for h in measured], "o-", label="generated")
    axes[2].plot([h["epoch"] for h in measured], [100 * h["real_face_share"] for h in measured], "--", label="real")
    axes[2].set(xlabel="epoch", ylabel="%", title="MTCNN finds a face")
    axes[2].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    return _save(plt, fig, Path(out_dir) / "curves_gan.png")


def plot_detector(history: list[dict], out_dir: str | os.PathLike) -> Path:
    """curves_detector.png: training loss and validation accuracy / AUC / EER per epoch."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    epochs = [h["epoch"] for h in history]
    axes[0].plot(epochs, [h["train_loss"] for h in history], "o-")
    axes[0].set(xlabel="epoch", ylabel="BCE loss", title="Training loss")
    for key, label in (("accuracy", "accuracy"), ("auc", "ROC AUC"), ("eer", "EER")):
        axes[1].plot(epochs, [h["val"][key] for h in history], "o-", label=label)
    axes[1].set(xlabel="epoch", title="Validation (held-out identities)")
    axes[1].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    return _save(plt, fig, Path(out_dir) / "curves_detector.png")


def _save(plt, fig, path: Path) -> Path:
    atomic_savefig(path, fig)
    plt.close(fig)
    return path
