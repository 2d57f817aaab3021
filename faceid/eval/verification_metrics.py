"""1:1 verification metrics: how well similarity scores separate same-person from different-person pairs.

Scores are cosine similarities (higher = more alike), labels booleans (True = same person): ROC, AUC, EER,
TAR at a FAR and the threshold that gives it, k-fold accuracy where each fold's threshold is chosen on the
other folds (the LFW protocol), everything together as `verification_report`, and the ROC plot.

Neighbours: `pairs` reads the pair files these scores come from (its fold rule is `stratified_folds`, here);
`identification_metrics` is the 1:N counterpart; training's validation reports with the same functions, so
its numbers and the evaluator's agree.
"""

from __future__ import annotations

import os

import numpy as np


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), thresholds descending; a pair is accepted when score >= threshold."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    if labels.all() or not labels.any():
        raise ValueError("ROC needs both genuine and impostor pairs")
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(y)[distinct]
    fp = np.cumsum(~y)[distinct]
    tpr = np.r_[0.0, tp / y.sum()]
    fpr = np.r_[0.0, fp / (~y).sum()]
    thresholds = np.r_[np.inf, s[distinct]]
    return fpr, tpr, thresholds


def roc_auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    return float(np.trapezoid(tpr, fpr))


def equal_error_rate(fpr: np.ndarray, tpr: np.ndarray, thresholds: np.ndarray) -> tuple[float, float]:
    """(EER, threshold at the EER), interpolating where FAR crosses FRR."""
    fnr = 1.0 - tpr
    i = int(np.nonzero(fpr >= fnr)[0][0])
    if i == 0:
        return float(fpr[0]), float(thresholds[0])
    d0, d1 = fnr[i - 1] - fpr[i - 1], fnr[i] - fpr[i]
    w = d0 / (d0 - d1) if d0 != d1 else 0.0
    eer = fpr[i - 1] + w * (fpr[i] - fpr[i - 1])
    thr = (
        thresholds[i]
        if not np.isfinite(thresholds[i - 1])
        else thresholds[i - 1] + w * (thresholds[i] - thresholds[i - 1])
    )
    return float(eer), float(thr)


def threshold_at_far(scores: np.ndarray, labels: np.ndarray, far: float) -> tuple[float, float]:
    """(threshold, TAR) for the lowest threshold whose false-accept rate is <= far.

    With too few impostor pairs to resolve `far` (fewer than 1/far), the result is the strictest
    point measured; `tar_at_far` reports it as such rather than extrapolating.
    """
    fpr, tpr, thr = roc_curve(scores, labels)
    ok = np.nonzero(fpr <= far)[0]
    i = int(ok[-1])
    threshold = float(thr[i]) if np.isfinite(thr[i]) else float(np.max(scores)) + 1e-6
    return threshold, float(tpr[i])


def kfold_accuracy(scores: np.ndarray, labels: np.ndarray, folds: np.ndarray | int = 10) -> dict:
    """LFW protocol: for each fold, pick the accuracy-maximising threshold on the other folds.

    folds: an array giving each pair's fold, or a number k: then the genuine pairs are cut in order into
    k folds and so are the impostors (for insightface's lfw.bin, in View 2 order, these are the official
    folds). Returns mean, std (sample, ddof=1), sem (standard error of the mean = std / sqrt(folds): the
    ± LFW's protocol asks for), per-fold accuracies and thresholds.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    if isinstance(folds, (int, np.integer)):
        folds = stratified_folds(labels, int(folds))
    folds = np.asarray(folds)
    accs, thrs = [], []
    for f in np.unique(folds):
        test, train = folds == f, folds != f
        threshold = best_accuracy_threshold(scores[train], labels[train])
        thrs.append(threshold)
        accs.append(float(np.mean((scores[test] >= threshold) == labels[test])))
    std = float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0
    return {
        "mean": float(np.mean(accs)),
        "std": std,
        "sem": std / float(np.sqrt(len(accs))),
        "folds": accs,
        "thresholds": thrs,
    }


def stratified_folds(labels: np.ndarray, k: int) -> np.ndarray:
    """Fold index per pair: each class's pairs cut in order into k contiguous folds."""
    labels = np.asarray(labels, dtype=bool)
    folds = np.empty(len(labels), dtype=np.int64)
    for cls in (True, False):
        idx = np.nonzero(labels == cls)[0]
        folds[idx] = np.arange(len(idx)) * k // max(len(idx), 1)
    return folds


def best_accuracy_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold (midway between neighbouring scores) that maximises accuracy on these pairs."""
    s = np.sort(np.unique(scores))
    candidates = np.r_[s[0] - 1e-6, (s[:-1] + s[1:]) / 2, s[-1] + 1e-6]
    order = np.argsort(scores)
    ss, yy = scores[order], labels[order]
    # accepted = score >= c; correct = genuine accepted + impostors rejected
    idx = np.searchsorted(ss, candidates, side="left")
    genuine_below = np.r_[0, np.cumsum(yy)][idx]
    impostor_below = np.r_[0, np.cumsum(~yy)][idx]
    correct = (yy.sum() - genuine_below) + impostor_below
    return float(candidates[int(np.argmax(correct))])


def verification_report(
    scores: np.ndarray, labels: np.ndarray, folds: np.ndarray | int = 10, fars: tuple[float, ...] = (1e-3, 1e-2)
) -> dict:
    """Everything the field reports for one pair set, as a JSON-ready dict."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    fpr, tpr, thr = roc_curve(scores, labels)
    eer, eer_thr = equal_error_rate(fpr, tpr, thr)
    acc = kfold_accuracy(scores, labels, folds)
    report = {
        "pairs": int(len(scores)),
        "genuine": int(labels.sum()),
        "impostor": int((~labels).sum()),
        "accuracy": acc["mean"],
        "accuracy_sem": acc["sem"],
        "accuracy_std": acc["std"],
        "accuracy_threshold": float(np.mean(acc["thresholds"])),
        "fold_accuracies": acc["folds"],
        "fold_thresholds": acc["thresholds"],
        "auc": roc_auc(fpr, tpr),
        "eer": eer,
        "eer_threshold": eer_thr,
    }
    for far in fars:
        t, tar = threshold_at_far(scores, labels, far)
        report[f"tar@far={far:g}"] = tar
        report[f"threshold@far={far:g}"] = t
        report[f"far={far:g}_resolved"] = bool((~labels).sum() * far >= 1)
    return report


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike, title: str = "ROC") -> None:
    """Save a log-FAR ROC plot of one or more (fpr, tpr) curves as PNG (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..core.fileio import atomic_savefig

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, (fpr, tpr) in curves.items():
        keep = fpr > 0
        ax.plot(fpr[keep], tpr[keep], label=name)
    ax.set_xscale("log")
    ax.set_xlabel("false accept rate (impostors let in)")
    ax.set_ylabel("true accept rate (genuine accepted)")
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="lower right")
    atomic_savefig(path, fig)
    plt.close(fig)
