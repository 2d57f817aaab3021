"""Verification metrics and the standard pair formats.

Metrics work on cosine similarity scores (higher = more alike) with boolean labels (True = same person):
ROC, AUC, EER, TAR at a FAR, the threshold for a target FAR, and k-fold accuracy where each fold's
threshold is chosen on the other folds (the LFW protocol).

Formats: LFW pair lists (View 1's single count header, View 2's ``folds<TAB>pairs`` header) and
insightface's verification ``.bin`` (a pickle of (list of JPEG bytes, list of bool)), read with an
unpickler that allows no globals, so a hostile file cannot run code.

Pair sets (`Dataset`, `load_pairs_dataset`, `load_bin_dataset`): the one loader of pairs files and .bin files
that both the evaluator and training's validation use (the same unique images, pairs and folds), so
the two report the same numbers for the same file and weights (tests/test_evaluate.py checks it).
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import FaceIDError
from ..core.safe_pickle import ForbiddenGlobal, restricted_load


# ----------------------------------------------------------------------------- metrics


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


# ----------------------------------------------------------------------------- LFW pair lists


@dataclass(frozen=True)
class Pair:
    name1: str
    num1: int
    name2: str
    num2: int
    same: bool
    fold: int

    def paths(self, root: str | os.PathLike) -> tuple[Path, Path]:
        root = Path(root)
        return (
            root / self.name1 / f"{self.name1}_{self.num1:04d}.jpg",
            root / self.name2 / f"{self.name2}_{self.num2:04d}.jpg",
        )


def read_pairs(path: str | os.PathLike) -> list[Pair]:
    """Parse an LFW pairs file: View 1 (header "N") or View 2 (header "folds<TAB>N").

    View 1 files hold N matched then N mismatched pairs (one set: it gets 10 stratified folds, for
    10-fold accuracy); View 2 holds, per fold, N matched then N mismatched. Pairs carry their fold.
    """
    path = Path(path)
    try:
        lines = [ln.split() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise FaceIDError(f"Cannot read the pairs file {path}: {err}.") from None
    try:
        header = [int(v) for v in lines[0]]
        folds, per_kind = (1, header[0]) if len(header) == 1 else (header[0], header[1])
    except (IndexError, ValueError):
        raise FaceIDError(f"{path} does not start with an LFW pairs header ('N' or 'folds<TAB>N').") from None
    body = lines[1:]
    if len(body) != folds * per_kind * 2:
        raise FaceIDError(f"{path}: the header promises {folds * per_kind * 2} pairs but {len(body)} lines follow.")
    pairs = []
    for i, parts in enumerate(body):
        fold = i // (2 * per_kind) if folds > 1 else (i % per_kind) * 10 // per_kind
        try:
            if len(parts) == 3:
                pairs.append(Pair(parts[0], int(parts[1]), parts[0], int(parts[2]), True, fold))
            elif len(parts) == 4:
                pairs.append(Pair(parts[0], int(parts[1]), parts[2], int(parts[3]), False, fold))
            else:
                raise ValueError
        except ValueError:
            raise FaceIDError(f"{path}, line {i + 2}: expected 'name n1 n2' or 'name1 n1 name2 n2'.") from None
    return pairs


# ----------------------------------------------------------------------------- pair sets (evaluator and training validation)


@dataclass
class Dataset:
    """Pairs to score. items: unique image paths (pairs files) or JPEG bytes (.bin); index: (P, 2) into items;
    labels: (P,) bool, True = same person; folds: (P,) int fold of each pair."""

    kind: str  # "lfw-pairs" or "verification-bin"
    name: str  # file stem, used to name the outputs
    items: list
    index: np.ndarray
    labels: np.ndarray
    folds: np.ndarray
    describe: dict = field(default_factory=dict)


def _take_limit(labels: np.ndarray, limit: int | None) -> np.ndarray:
    """Indices of the first ceil(limit/2) genuine and floor(limit/2) impostor pairs (all when limit is None)."""
    if not limit or limit >= len(labels):
        return np.arange(len(labels))
    if limit < 2:
        raise FaceIDError(
            f"The pair limit must be at least 2 (one genuine and one impostor pair), got {limit}.", "limit"
        )
    genuine, impostor = np.nonzero(labels)[0], np.nonzero(~labels)[0]
    return np.sort(np.r_[genuine[: (limit + 1) // 2], impostor[: limit // 2]])


def _is_view2(path: Path) -> bool:
    """True when the pairs file's header is View 2's ``folds<TAB>N`` (read_pairs has already validated it)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return len(f.readline().split()) == 2


def load_pairs_dataset(
    pairs_path: str | os.PathLike, image_root: str | os.PathLike, folds: int = 10, limit: int | None = None
) -> Dataset:
    """Parse the pairs file and check every image exists (before any model is loaded).

    Folds: a View 2 file used whole keeps its own folds; View 1, or any subset, is cut into `folds`
    stratified folds (genuine and impostor pairs each in file order), as ``verification`` documents.
    """
    pairs_path, root = Path(pairs_path), Path(image_root)
    if not root.is_dir():
        raise FaceIDError(
            f"The image root {root} is not a directory; pass the folder that holds <Name>/<Name>_NNNN.jpg."
        )
    pairs = read_pairs(pairs_path)
    if not pairs:
        raise FaceIDError(f"{pairs_path} lists no pairs.")
    labels = np.array([p.same for p in pairs], dtype=bool)
    if labels.all() or not labels.any():
        raise FaceIDError(f"{pairs_path} needs both same-person and different-person pairs.")
    keep = _take_limit(labels, limit)
    whole = len(keep) == len(labels)
    pairs, labels = [pairs[i] for i in keep], labels[keep]
    view2 = _is_view2(pairs_path)
    if view2 and whole:
        fold_ids = np.array([p.fold for p in pairs])
    else:
        fold_ids = stratified_folds(labels, folds)
    paths: dict[Path, int] = {}
    index = np.array(
        [[paths.setdefault(a, len(paths)), paths.setdefault(b, len(paths))] for a, b in (p.paths(root) for p in pairs)],
        dtype=np.int64,
    )
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FaceIDError(
            f"{len(missing)} of the {len(paths)} images named by {pairs_path} are missing under "
            f"{root} (first: {missing[0]}); check the image folder.",
            "images",
        )
    describe = {
        "pairs_file": str(pairs_path),
        "image_root": str(root),
        "header": "View 2 (folds<TAB>N)" if view2 else "View 1 (single count)",
        "folds": int(len(np.unique(fold_ids))),
        "fold_source": "the file's own folds" if view2 and whole else "stratified, in file order",
    }
    return Dataset("lfw-pairs", pairs_path.stem, list(paths), index, labels, fold_ids, describe)


def load_bin_dataset(bin_path: str | os.PathLike, folds: int = 10, limit: int | None = None) -> Dataset:
    """An insightface .bin: images 2i and 2i+1 form pair i; identical JPEGs are embedded once."""
    bin_path = Path(bin_path)
    if not bin_path.is_file():
        raise FaceIDError(f"The verification file {bin_path} does not exist.")
    blobs, issame = load_verification_bin(bin_path)
    if issame.all() or not issame.any():
        raise FaceIDError(f"{bin_path} needs both same-person and different-person pairs.")
    keep = _take_limit(issame, limit)
    unique: dict[bytes, int] = {}
    index = np.array(
        [
            [unique.setdefault(blobs[2 * i], len(unique)), unique.setdefault(blobs[2 * i + 1], len(unique))]
            for i in keep
        ],
        dtype=np.int64,
    )
    labels = issame[keep]
    describe = {
        "bin": str(bin_path),
        "folds": int(folds),
        "fold_source": "stratified, in file order",
        "note": "images are pre-aligned 112x112 crops: detection skipped, embedded directly",
    }
    return Dataset(
        "verification-bin", bin_path.stem, list(unique), index, labels, stratified_folds(labels, folds), describe
    )


# ----------------------------------------------------------------------------- insightface .bin


def load_verification_bin(path: str | os.PathLike) -> tuple[list[bytes], np.ndarray]:
    """insightface's lfw.bin / cfp_fp.bin / agedb_30.bin -> (image bytes, 2 per pair; is_same per pair).

    Images i*2 and i*2+1 form pair i. Refuses any file that would need code to unpickle.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            obj = restricted_load(f, encoding="bytes")  # no globals at all: lists, bytes and bools
    except ForbiddenGlobal as err:
        raise FaceIDError(f"Cannot read verification file {path}: global {err} is not allowed.") from None
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as err:
        raise FaceIDError(f"Cannot read verification file {path}: {err}.") from None
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise FaceIDError(f"{path} is not an insightface verification file (expected (images, is_same)).")
    images, issame = obj
    # bytes(7) would silently become 7 zero bytes: insist on the types the format holds
    if not (
        isinstance(images, (list, tuple))
        and isinstance(issame, (list, tuple))
        and all(isinstance(b, (bytes, bytearray)) for b in images)
        and all(isinstance(v, (bool, int)) for v in issame)
    ):
        raise FaceIDError(
            f"{path} is not an insightface verification file (expected a list of image bytes and a list of booleans)."
        )
    images = [bytes(b) for b in images]
    issame = np.asarray([bool(v) for v in issame], dtype=bool)
    if len(images) != 2 * len(issame):
        raise FaceIDError(f"{path}: {len(images)} images for {len(issame)} pairs (expected two per pair).")
    return images, issame
