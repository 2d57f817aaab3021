"""Per-epoch evaluation: the seed's closed-set accuracy, and open-set verification, which is what matters.

- Closed set: accuracy (and loss) of the head's margin-free argmax on the 20% of the training identities'
  images held back by the seed's 80/20 split. Comparable with the seed's 87.65%; says nothing about people
  the network has never seen.
- Held-out identities: up to `--pairs` genuine + as many impostor pairs among people never trained on
  (deterministic, seed 42); ROC AUC, EER, TAR at FAR 1e-3 / 1e-2, 10-fold accuracy. Model selection reads
  this set.
- Calibration (faceid.model.calibration): on the same held-out people, the comparisons the app makes (templates of
  5 images vs probes of 3, and the one-photo kinds: faceid.model.heldout), every cross-identity template/probe
  pair as an impostor comparison, each kind with its margin; the score->FAR table goes into the checkpoint. Never computed from benchmark files unless the run was
  started with --tune-on-benchmark (then the table says so).
- insightface verification files beside the data (lfw.bin, cfp_fp.bin, agedb_30.bin, any *.bin): the
  10-fold protocol plus the same ROC numbers, reported only.

Embeddings are computed as the app computes them: `to_network_input`, L2-normalised sum of the image's and
its mirror's outputs (`faceid.model.embed`), in the training precision (bf16 autocast on an H100 costs about
a third of fp32's time; scores and thresholds are computed in fp32 from the normalised embeddings).
On a large set the closed-set split is capped (`closed_set_images`: a fixed random subset, the same every
epoch), so validation stays a small fraction of an epoch; its cost is printed per epoch.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..core import report
from ..data.datasets import FaceDataset, find_verification_bins
from ..eval.pairs import load_bin_dataset
from ..eval.verification_metrics import stratified_folds, verification_report
from ..model.calibration import PROBE_SAMPLES, SAMPLES, Calibration
from ..model.embeddings import EMBEDDING_DIM
from ..model.heldout import KINDS, build_tables
from ..model.network import embed
from ..model.preprocessing import PreprocessSpec
from ..model.validation_record import validation_record
from .feed import BatchFeed, FaceSamples, make_loader
from .heads import Normalized

HELDOUT = "heldout"  # the pair set of held-out people (the others are benchmark files)
CALIBRATION_IMAGES = 20_000  # held-out images embedded for the calibration table per validation, at most


class EncodedImages:
    """A list of encoded images with the FaceDataset reading interface (for .bin files)."""

    def __init__(self, images: list[bytes], spec: PreprocessSpec, name: str):
        self.images, self.spec, self.name = images, spec, name
        self.labels = np.zeros(len(images), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.images)

    def read_bytes(self, i: int) -> bytes:
        return self.images[i]

    def describe(self, i: int) -> str:
        return f"image {i} of {self.name}"


@dataclass
class PairSet:
    """Pairs over an image source: pairs (P, 2) indices into `source`, issame (P,) bool."""

    name: str
    source: object  # FaceDataset or EncodedImages
    pairs: np.ndarray
    issame: np.ndarray
    note: str = ""
    folds: np.ndarray | None = None  # fold of each pair for the 10-fold accuracy (None: stratified, in order)
    scores: np.ndarray | None = field(default=None, repr=False)


def make_pairs(
    labels: np.ndarray, n_genuine: int = 3000, n_impostor: int = 3000, seed: int = 42
) -> tuple[np.ndarray, np.ndarray, str]:
    """Deterministic genuine/impostor pairs over images with these identity labels.

    Returns (pairs (P, 2) int64, issame (P,) bool, note); every pair if fewer exist than asked, and the
    note then says how many there are.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    groups = [np.nonzero(labels == c)[0] for c in np.unique(labels)]
    counts = np.array([len(g) * (len(g) - 1) // 2 for g in groups], dtype=np.int64)
    n = len(labels)
    total_imp = n * (n - 1) // 2 - int(counts.sum())  # every cross-identity pair
    if counts.sum() <= n_genuine:
        genuine = [(g[i], g[j]) for g in groups for i in range(len(g)) for j in range(i + 1, len(g))]
    else:
        chosen: set = set()
        while len(chosen) < n_genuine:
            for k in rng.choice(len(groups), size=n_genuine, p=counts / counts.sum()):
                a, b = rng.choice(groups[k], size=2, replace=False)
                chosen.add((min(a, b), max(a, b)))
                if len(chosen) == n_genuine:
                    break
        genuine = sorted(chosen)
    if total_imp <= n_impostor:
        impostor = [(i, j) for i in range(n) for j in range(i + 1, n) if labels[i] != labels[j]]
    else:
        chosen = set()
        while len(chosen) < n_impostor:
            a, b = rng.integers(0, n, size=2)
            if labels[a] != labels[b]:
                chosen.add((min(a, b), max(a, b)))
        impostor = sorted(chosen)
    pairs = np.array(genuine + impostor, dtype=np.int64).reshape(-1, 2)
    issame = np.r_[np.ones(len(genuine), bool), np.zeros(len(impostor), bool)]
    note = ""
    if len(genuine) < n_genuine or len(impostor) < n_impostor:
        # what exists, not what was drawn: a kind that had enough was sampled down to what was asked for
        note = (
            f"{int(counts.sum()):,} genuine and {total_imp:,} impostor pairs exist among these images "
            f"(asked for {n_genuine:,} + {n_impostor:,}; using {len(genuine):,} + {len(impostor):,})"
        )
    return pairs, issame, note


def heldout_pairs(heldout: FaceDataset, n_pairs: int, seed: int) -> PairSet:
    pairs, issame, note = make_pairs(heldout.labels, n_pairs, n_pairs, seed)
    return PairSet(HELDOUT, heldout, pairs, issame, note)


def bin_pairs(path: Path, spec: PreprocessSpec) -> PairSet:
    """A .bin through the evaluator's loader (eval.pairs.load_bin_dataset): the same unique images, pairs and
    folds as evaluate_model.py --bin, so both report the same numbers for the same weights."""
    data = load_bin_dataset(path)
    return PairSet(path.stem, EncodedImages(data.items, spec, path.name), data.index, data.labels, folds=data.folds)


class Loaders:
    """One DataLoader per (source, images) that validation reads, made on first use and kept, with their worker
    processes alive between epochs: building four pools of workers per epoch cost more than embedding pins90's
    validation images on a GPU (epochs of about a second). `close()` ends the workers."""

    def __init__(self, feed: BatchFeed, batch_size: int, workers: int):
        self.feed, self.batch_size, self.workers = feed, batch_size, workers
        self._made: dict[str, DataLoader] = {}

    def get(self, key: str, source, indices: np.ndarray) -> DataLoader:
        if key not in self._made:
            samples = FaceSamples(source, indices, decode_on_cpu=self.feed.decode == "cpu")
            self._made[key] = make_loader(
                samples, self.batch_size, self.workers, persistent=True, pin_memory=self.feed.device.type == "cuda"
            )
        return self._made[key]

    def close(self) -> None:
        self._made.clear()  # a DataLoader's persistent workers end when it is released


@torch.no_grad()
def embed_samples(
    backbone: torch.nn.Module,
    source,
    indices: np.ndarray,
    feed: BatchFeed,
    batch_size: int,
    workers: int,
    desc: str,
    amp=nullcontext,
    loaders: Loaders | None = None,
) -> torch.Tensor:
    """(len(indices), 512) float32 CPU embeddings, flip-summed, from a raw-feature backbone in eval mode;
    `amp()`: the precision context the network runs in; `loaders`: where the loader for `desc` is kept."""
    loaders = loaders or Loaders(feed, batch_size, workers)
    loader = loaders.get(desc, source, indices)
    net = Normalized(backbone)
    out = []
    for batch in report.progress(loader, desc=desc, leave=False, unit="batch"):
        x, _ = feed(batch, source=source)
        with amp():
            out.append(embed(net, x, flip=True).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, EMBEDDING_DIM)


def score_pairs(
    backbone,
    pair_set: PairSet,
    feed: BatchFeed,
    batch_size: int,
    workers: int,
    amp=nullcontext,
    loaders: Loaders | None = None,
) -> dict:
    """Embed the images the pairs use, score them by cosine, and report (plus the note, if any)."""
    used, inverse = np.unique(pair_set.pairs, return_inverse=True)
    emb = embed_samples(
        backbone, pair_set.source, used, feed, batch_size, workers, f"embed {pair_set.name}", amp, loaders
    )
    inv = torch.from_numpy(inverse.reshape(-1, 2))
    pair_set.scores = (emb[inv[:, 0]] * emb[inv[:, 1]]).sum(1).double().numpy()
    folds = pair_set.folds if pair_set.folds is not None else stratified_folds(pair_set.issame, 10)
    report = verification_report(pair_set.scores, pair_set.issame, folds)
    if pair_set.note:
        report["note"] = pair_set.note
    return report


@torch.no_grad()
def closed_set(
    net,
    source: FaceDataset,
    indices: np.ndarray,
    feed: BatchFeed,
    batch_size: int,
    workers: int,
    amp=nullcontext,
    loaders: Loaders | None = None,
) -> dict:
    """Accuracy of the head's margin-free argmax and the training loss (with margin) on these images."""
    loader = (loaders or Loaders(feed, batch_size, workers)).get("closed-set", source, indices)
    correct, loss_sum, n = 0, 0.0, 0
    for batch in report.progress(loader, desc="closed-set", leave=False, unit="batch"):
        x, y = feed(batch, source=source)
        with amp():
            features = net.backbone(x)
            correct += int((net.head(features).argmax(1) == y).sum())
            loss_sum += float(F.cross_entropy(net.head(features, y).float(), y, reduction="sum"))
        n += len(y)
    return {"accuracy": correct / max(n, 1), "loss": loss_sum / max(n, 1), "images": n}


def calibration_indices(labels: np.ndarray, budget: int = CALIBRATION_IMAGES, seed: int = 42) -> np.ndarray:
    """Held-out images to embed for calibration: every one up to `budget`, else an even share per person
    (at least a template and a probe's worth each), chosen deterministically."""
    labels = np.asarray(labels)
    if len(labels) <= budget:
        return np.arange(len(labels))
    people = np.unique(labels)
    share = max(SAMPLES + PROBE_SAMPLES, budget // len(people))
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.nonzero(labels == p)[0])[:share] for p in people]
    return np.sort(np.concatenate(chosen))


def heldout_calibration(
    backbone,
    heldout: FaceDataset,
    feed: BatchFeed,
    batch_size: int,
    workers: int,
    amp=nullcontext,
    loaders: Loaders | None = None,
) -> Calibration | None:
    """The app's comparisons (templates vs probes, one table per kind of `heldout.KINDS`, each with its
    margin) on the held-out identities; None when fewer than two of them have even the images of a 1-vs-1
    comparison."""
    _, per_person = np.unique(heldout.labels, return_counts=True)
    if int((per_person >= min(s + p for s, p in KINDS)).sum()) < 2:
        return None
    idx = calibration_indices(heldout.labels)
    emb = embed_samples(backbone, heldout, idx, feed, batch_size, workers, "embed calibration", amp, loaders).numpy()

    def source(counts: dict) -> str:
        return (
            f"{counts['identities']} held-out identities ({len(idx):,} images, {counts['templates']} templates, "
            f"{counts['probes']} probes)"
        )

    table, _ = build_tables(emb, heldout.labels[idx], source)
    return table


def benchmark_calibration(pair_set: PairSet) -> Calibration:
    """Only with --tune-on-benchmark: single-image pairs of a benchmark file, stamped as benchmark data."""
    scores, same = pair_set.scores, pair_set.issame
    assert scores is not None  # called after Validator.run has scored the pair set
    return Calibration.from_scores(
        scores[same], scores[~same], 1, 1, f"benchmark pairs {pair_set.name} (single images)", benchmark_data=True
    )


def calibration_summary(table: Calibration, target_far: float) -> dict:
    """JSON-ready record of a table for the history and the summary line."""
    t = table.threshold_for_far(target_far)
    margin = table.margin_for()
    return {
        "threshold": t.value,
        "target_far": float(target_far),
        "tar": t.tar,
        "resolved": t.resolved,
        "impostor_pairs": table.impostors,
        "source": table.source,
        "benchmark_data": table.benchmark_data,
        "text": t.text,
        "margin": margin.value,
        "margin_source": margin.source,
        "margin_text": margin.text,
        "table": table.table(),
        "kinds": table.summary()["kinds"],
    }


class Validator:
    """Everything evaluated after each epoch. run(net) -> metrics dict (JSON-ready) with the calibration.

    amp: the training precision's context (autocast), so validation runs at the speed training does.
    closed_set_images: at most this many of the held-back images (a fixed random subset; None = all)."""

    def __init__(
        self,
        train_set: FaceDataset,
        val_indices: np.ndarray,
        pair_sets: list[PairSet],
        feed: BatchFeed,
        batch_size: int,
        workers: int,
        target_far: float,
        amp=nullcontext,
        closed_set_images: int | None = None,
        seed: int = 42,
        heldout: FaceDataset | None = None,
        tune_on_benchmark: bool = False,
    ):
        self.held_back = len(val_indices)
        if closed_set_images is not None and len(val_indices) > closed_set_images:
            pick = np.random.default_rng(seed).choice(len(val_indices), closed_set_images, replace=False)
            val_indices = np.asarray(val_indices)[np.sort(pick)]
        self.train_set, self.val_indices, self.pair_sets = train_set, val_indices, pair_sets
        self.feed, self.batch_size, self.workers, self.target_far = feed, batch_size, workers, target_far
        self.amp = amp
        self.loaders = Loaders(feed, batch_size, workers)  # kept across epochs (`close()` ends their workers)
        self.heldout, self.tune_on_benchmark = heldout, tune_on_benchmark
        self.last_calibration: Calibration | None = None  # the table of the latest run(), for the checkpoint
        self.last_record: Calibration | None = None  # the held-out pairs' validation record, for the checkpoint

    @classmethod
    def for_run(
        cls, cfg, data: FaceDataset, val_idx, heldout: FaceDataset | None, feed, batch_size: int, workers: int, amp
    ) -> Validator:
        """A training run's validator (`cfg`: its TrainConfig): the held-out pairs, every .bin beside the data
        (unless --no-bins), the closed set; at the run's precision (`amp`) and eval batch."""
        pair_sets = [heldout_pairs(heldout, cfg.pairs, cfg.seed)] if heldout is not None else []
        if cfg.bins:
            pair_sets += [bin_pairs(p, data.spec) for p in find_verification_bins(data.root)]
        return cls(
            data,
            val_idx,
            pair_sets,
            feed,
            cfg.eval_batch_size or min(256, batch_size * 2),
            workers,
            cfg.target_far,
            amp=amp,
            closed_set_images=cfg.val_images,
            seed=cfg.seed,
            heldout=heldout,
            tune_on_benchmark=cfg.tune_on_benchmark,
        )

    def describe(self) -> list[str]:
        capped = f" of the {self.held_back} held back" if len(self.val_indices) < self.held_back else ""
        lines = [f"closed set: {len(self.val_indices)} images{capped} of the training identities (80/20 split)"]
        for ps in self.pair_sets:
            lines.append(
                f"{ps.name}: {int(ps.issame.sum())} genuine + {int((~ps.issame).sum())} impostor pairs"
                + (f" ({ps.note})" if ps.note else "")
            )
        return lines

    def run(self, net) -> dict:
        was_training = net.training
        net.eval()
        metrics: dict = {}
        if len(self.val_indices):
            metrics["closed_set"] = closed_set(
                net, self.train_set, self.val_indices, self.feed, self.batch_size, self.workers, self.amp, self.loaders
            )
        for ps in self.pair_sets:
            metrics[ps.name] = score_pairs(
                net.backbone, ps, self.feed, self.batch_size, self.workers, self.amp, self.loaders
            )
        table = None
        self.last_record = None
        for ps in self.pair_sets:
            if ps.name == HELDOUT and ps.scores is not None:  # held-out people only, never a benchmark file
                self.last_record = validation_record(ps.scores, ps.issame, "held-out people's")
        if self.heldout is not None:
            table = heldout_calibration(
                net.backbone, self.heldout, self.feed, self.batch_size, self.workers, self.amp, self.loaders
            )
        elif self.tune_on_benchmark and self.pair_sets:
            table = benchmark_calibration(self.pair_sets[0])
        self.last_calibration = table
        if table is not None:
            metrics["calibration"] = calibration_summary(table, self.target_far)
        elif self.heldout is not None:
            metrics["calibration_note"] = (
                "no calibration table: fewer than two held-out identities have the 2 images a template of 1 "
                "and a probe of 1 need"
            )
        net.train(was_training)
        return metrics

    def close(self) -> None:
        """End the validation loaders' worker processes (the run is over)."""
        self.loaders.close()


def metric_value(metrics: dict, set_name: str, metric: str) -> float | None:
    """metrics[set_name][metric], or None when that set was not evaluated."""
    value = metrics.get(set_name, {}).get(metric)
    return None if value is None else float(value)


# The verification metrics a run can select its best checkpoint by, and which of them improve downwards.
SELECT_METRICS = ("auc", "eer", "accuracy", "tar@far=0.001", "tar@far=0.01")
LOWER_IS_BETTER = ("eer", "loss")
