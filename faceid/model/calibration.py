"""Score -> false-accept tables measured the way the app compares, and the thresholds read from them.

Why a table and not one number: the app makes two decisions. verify (1:1) needs the threshold at a
false-accept rate (FAR) per comparison; identify (1:N) compares a stranger with every one of N enrolled
people, so the chance that *someone* is accepted (FPIR, the false-positive identification rate) grows
with N: about 1 - (1 - FAR)^N (~1% at N=10, ~10% at N=100, ~63% at N=1,000 for FAR 1e-3). The table
keeps the highest impostor scores, so any FAR (or FPIR for any gallery size) can be read from it later.

What is compared (the app's comparison, not single images): a template averaged from ``samples`` images
(register's ``--samples``) against a probe averaged from ``probe_samples`` images (``--probe-samples``),
both made by the template rule (`embeddings.template_of`, the function the app and the gallery call),
cosine score. `template_probe_scores` builds these from embeddings of held-out
identities: each person's images, shuffled once, give disjoint templates (first half) and probes (second
half); genuine scores pair a person's templates with their own probes, impostor scores every template
with every other person's probes (cheap once the embeddings exist).

Resolution: a FAR is "resolved" when at least 100/FAR impostor comparisons were made. Below that, the
rate comes with its 95% interval (Wilson); a target below 1/impostors cannot be met from the data: the
threshold is then the strictest point measured (just above the highest impostor score), marked so.

FPIR by gallery size uses FPIR = 1 - (1 - FAR)^N (independent impostor scores): the evaluator's 1:N mode
measures the real FPIR on people never seen, to check it.

Training's validation and the evaluator both build tables with `template_probe_scores` and
`Calibration.from_scores`; the checkpoint stores `to_dict()`; the app reads it with `from_dict`.
Benchmark data (LFW, .bin files) is never used unless explicitly asked, and then `benchmark_data` says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..core.errors import FaceIDError
from .embeddings import template_of

SAMPLES = 5  # images averaged into a registered template (the app's --samples default)
PROBE_SAMPLES = 3  # frames averaged into a probe (the app's --probe-samples default)
FAR_TARGET = 1e-3  # verify's default per-comparison false-accept rate
FPIR_TARGET = 1e-3  # identify's default chance that an unregistered person is accepted as someone
RESOLVE_FACTOR = 100  # a rate is resolved with at least this many / rate impostor comparisons
MAX_TABLE_FAR = 0.1  # the table keeps the impostor scores needed for any FAR up to this
FORMAT = "faceid-calibration"
VERSION = 1


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% interval of a rate k/n (Wilson score interval; sensible at k = 0, unlike the normal one)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def fpir_from_far(far: float, gallery_size: int) -> float:
    """Chance that a stranger beats the threshold against at least one of `gallery_size` people."""
    return float(-math.expm1(gallery_size * math.log1p(-min(far, 1.0 - 1e-15))))


def far_for_fpir(fpir: float, gallery_size: int) -> float:
    """The per-comparison FAR that gives `fpir` over a gallery of `gallery_size` people."""
    return float(-math.expm1(math.log1p(-fpir) / max(gallery_size, 1)))


@dataclass(frozen=True)
class Split:
    """Which images make which comparison: index groups of `samples` images (templates) and of `probe_samples`
    images (probes) per person, disjoint within a person, and whose each group is."""

    template_groups: list[np.ndarray]
    template_owner: np.ndarray
    probe_groups: list[np.ndarray]
    probe_owner: np.ndarray
    skipped_identities: int


def split_by_person(labels: np.ndarray, samples: int, probe_samples: int, seed: int = 42) -> Split:
    """Each person's images, shuffled once: the first half gives templates of `samples`, the rest probes of
    `probe_samples`. People with fewer than samples + probe_samples images are left out (counted)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    t_groups: list[np.ndarray] = []
    p_groups: list[np.ndarray] = []
    t_owner, p_owner, skipped = [], [], 0
    for person in np.unique(labels):
        idx = rng.permutation(np.nonzero(labels == person)[0])
        if len(idx) < samples + probe_samples:
            skipped += 1
            continue
        n_templates = max(1, (len(idx) // 2) // samples)
        n_probes = (len(idx) - n_templates * samples) // probe_samples
        t_groups += [idx[t * samples : (t + 1) * samples] for t in range(n_templates)]
        t_owner += [person] * n_templates
        rest = idx[n_templates * samples :]
        p_groups += [rest[p * probe_samples : (p + 1) * probe_samples] for p in range(n_probes)]
        p_owner += [person] * n_probes
    return Split(t_groups, np.asarray(t_owner), p_groups, np.asarray(p_owner), skipped)


def templates_of(embeddings: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """(G, D): one template per index group, by the rule the app and the gallery use (`template_of`)."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    return np.stack([template_of(embeddings[g]) for g in groups])


def template_probe_scores(
    embeddings: np.ndarray,
    labels: np.ndarray,
    samples: int = SAMPLES,
    probe_samples: int = PROBE_SAMPLES,
    seed: int = 42,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """(genuine scores, impostor scores, counts) of templates of `samples` vs probes of `probe_samples`.

    embeddings: (N, D) unit vectors, one per image; labels: (N,) identity of each; the split is `split_by_person`.
    Deterministic for a given seed.
    """
    split = split_by_person(labels, samples, probe_samples, seed)
    if not split.template_groups:
        raise FaceIDError(
            f"No identity has the {samples + probe_samples} images a template of {samples} and a "
            f"probe of {probe_samples} need; calibration needs more images per person."
        )
    scores = templates_of(embeddings, split.template_groups) @ templates_of(embeddings, split.probe_groups).T
    same = split.template_owner[:, None] == split.probe_owner[None, :]
    counts = {
        "identities": int(len(np.unique(split.template_owner))),
        "skipped_identities": split.skipped_identities,
        "templates": len(split.template_groups),
        "probes": len(split.probe_groups),
        "images": int(len(labels)),
    }
    return scores[same].astype(np.float64), scores[~same].astype(np.float64), counts


@dataclass(frozen=True)
class Threshold:
    """A decision threshold and what it means; `text` is what the app prints. `source` says where it came from:
    "table" (read from a calibration table at a target rate; the reading's fields are then set), "option"
    (``--threshold``), "checkpoint" (a checkpoint's single 1:1 threshold, uncalibrated for 1:N) or "default"
    (the seed's uncalibrated 0.6)."""

    value: float
    text: str
    source: str = "table"
    rate_name: str | None = None  # "FAR" or "FPIR"
    target: float | None = None
    gallery_size: int | None = None
    rate: float | None = None  # the measured rate at this threshold (per comparison for FAR; per gallery for FPIR)
    rate_high: float | None = None  # upper end of its 95% interval
    resolved: bool = False
    beyond_data: bool = False  # the target is below 1/impostors: strictest point measured
    tar: float | None = None  # genuine template/probe comparisons accepted

    def to_dict(self) -> dict:
        """The table reading (None for a threshold that does not come from a table)."""
        return {
            "threshold": round(self.value, 6),
            "rate": self.rate_name,
            "target": self.target,
            "gallery_size": self.gallery_size,
            "measured_rate": self.rate,
            "rate_95_high": self.rate_high,
            "resolved": self.resolved,
            "beyond_data": self.beyond_data,
            "tar": self.tar,
            "text": self.text,
        }

    def decision_fields(self) -> dict:
        """What a decision's JSON says about its threshold."""
        return {
            "threshold": round(self.value, 4),
            "threshold_source": self.source,
            "threshold_text": self.text,
            "calibration": self.to_dict() if self.source == "table" else None,
        }


def _rank_grid(count: int) -> np.ndarray:
    """Impostor ranks the table keeps: every rank below 100, then steps of 2% up to MAX_TABLE_FAR of them.

    Reading a FAR between two kept ranks takes the lower one, so a threshold is never looser than asked and
    at most 2% stricter; the table stays a few hundred numbers whatever the number of comparisons."""
    top = min(count - 1, int(math.ceil(MAX_TABLE_FAR * count)))
    dense = np.arange(0, min(top, 99) + 1)
    sparse = np.geomspace(100, max(top, 100), num=max(2, int(math.log(max(top, 100) / 100) / math.log(1.02)) + 2))
    return np.unique(np.r_[dense, np.floor(sparse).astype(np.int64)[sparse <= top]])


def _quantiles(scores: np.ndarray, keep: int = 2001) -> np.ndarray:
    """Sorted scores, thinned to `keep` evenly spaced order statistics when there are more."""
    s = np.sort(scores)
    return s if len(s) <= keep else s[np.linspace(0, len(s) - 1, keep).round().astype(np.int64)]


@dataclass(frozen=True)
class Calibration:
    """One comparison kind's impostor tail and genuine scores.

    ranks / rank_scores: rank_scores[i] is the (ranks[i]+1)-th highest impostor score (ranks ascending from 0);
    impostors: how many impostor comparisons were made; genuine: sorted genuine scores (or their quantiles).
    """

    ranks: np.ndarray
    rank_scores: np.ndarray
    impostors: int
    genuine: np.ndarray
    samples: int
    probe_samples: int
    source: str
    benchmark_data: bool = False
    identities: int = 0

    @classmethod
    def from_scores(
        cls,
        genuine: np.ndarray,
        impostor: np.ndarray,
        samples: int,
        probe_samples: int,
        source: str,
        benchmark_data: bool = False,
        identities: int = 0,
    ) -> "Calibration":
        impostor = np.asarray(impostor, dtype=np.float64).reshape(-1)
        genuine = np.asarray(genuine, dtype=np.float64).reshape(-1)
        if len(impostor) == 0 or len(genuine) == 0:
            raise FaceIDError("Calibration needs both genuine and impostor comparisons (at least two people).")
        ranks = _rank_grid(len(impostor))
        top = -np.sort(-np.partition(impostor, len(impostor) - 1 - ranks[-1])[len(impostor) - 1 - ranks[-1] :])
        return cls(
            ranks,
            top[ranks],
            int(len(impostor)),
            _quantiles(genuine),
            int(samples),
            int(probe_samples),
            str(source),
            bool(benchmark_data),
            int(identities),
        )

    # ------------------------------------------------------------------ reading the table
    def far_at(self, threshold: float) -> tuple[float, float, float]:
        """(FAR, its 95% low, high) of accepting score >= threshold (between kept ranks: the higher count)."""
        above = int(np.sum(self.rank_scores >= threshold))
        if above == 0:
            k = 0
        elif above < len(self.ranks):
            k = int(self.ranks[above])
        else:
            k = self.impostors if self.ranks[-1] + 1 >= self.impostors else int(self.ranks[-1]) + 1
        return k / self.impostors, *wilson_interval(k, self.impostors)

    def tar_at(self, threshold: float) -> float:
        return float(1.0 - np.searchsorted(self.genuine, threshold, side="left") / len(self.genuine))

    def _at_far(self, far: float) -> tuple[float, int, bool]:
        """(threshold, impostors it accepts, beyond data) for the loosest kept threshold with FAR <= far."""
        wanted = int(math.floor(far * self.impostors + 1e-9))
        if far > MAX_TABLE_FAR:
            raise FaceIDError(
                f"The calibration table covers false-accept rates up to {MAX_TABLE_FAR:g}; {far:g} is outside it."
            )
        i = int(np.searchsorted(self.ranks, min(wanted, int(self.ranks[-1])), side="right")) - 1
        k = int(self.ranks[i])
        # accept strictly above the (k+1)-th highest impostor score: exactly k accepted (ties aside)
        return float(np.nextafter(self.rank_scores[i], np.inf)), k, far * self.impostors < 1

    def comparison(self) -> str:
        """What the table was measured for, in words: "template of 5 vs probe of 3"."""
        return f"template of {self.samples} vs probe of {self.probe_samples}"

    def threshold_for_far(self, far: float) -> Threshold:
        """verify: the threshold at this per-comparison FAR."""
        value, k, beyond = self._at_far(far)
        low, high = wilson_interval(k, self.impostors)
        return self._threshold(
            value, "FAR", far, None, k / self.impostors, high, beyond, f"threshold {value:.3f} = FAR {far:g}"
        )

    def threshold_for_fpir(self, fpir: float, gallery_size: int) -> Threshold:
        """identify: the threshold at which a stranger is accepted as one of `gallery_size` people with
        probability `fpir`."""
        n = max(int(gallery_size), 1)
        value, k, beyond = self._at_far(far_for_fpir(fpir, n))
        low, high = wilson_interval(k, self.impostors)
        people = "1 person" if n == 1 else f"{n:,} people"
        return self._threshold(
            value,
            "FPIR",
            fpir,
            n,
            fpir_from_far(k / self.impostors, n),
            fpir_from_far(high, n),
            beyond,
            f"threshold {value:.3f} = FPIR {fpir:g} for {people}",
        )

    def _threshold(self, value, name, target, n, rate, high, beyond, head) -> Threshold:
        resolved = self.impostors * (target if n is None else far_for_fpir(target, n)) >= RESOLVE_FACTOR
        if beyond:
            note = (
                f"; the target is below what {self.impostors:,} impostor comparisons can show: strictest "
                f"point measured, {name} <= {high:.2g} at 95%"
            )
        elif not resolved:
            note = f"; coarse: {name} <= {high:.2g} at 95% from {self.impostors:,} impostor comparisons"
        else:
            note = ""
        stamp = " ON BENCHMARK DATA" if self.benchmark_data else ""
        text = f"{head}, calibrated{stamp} on {self.source}, {self.comparison()}{note}"
        return Threshold(
            value=value,
            text=text,
            rate_name=name,
            target=float(target),
            gallery_size=n,
            rate=float(rate),
            rate_high=float(high),
            resolved=bool(resolved),
            beyond_data=bool(beyond),
            tar=self.tar_at(value),
        )

    def table(self, fars: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)) -> list[dict]:
        """JSON rows: FAR target -> threshold, measured FAR with its 95% interval, genuine accept rate."""
        rows = []
        for far in fars:
            value, k, beyond = self._at_far(far)
            low, high = wilson_interval(k, self.impostors)
            rows.append(
                {
                    "far": far,
                    "threshold": round(value, 6),
                    "measured_far": k / self.impostors,
                    "far_95": [low, high],
                    "tar": self.tar_at(value),
                    "beyond_data": beyond,
                    "resolved": self.impostors * far >= RESOLVE_FACTOR,
                }
            )
        return rows

    def summary(self) -> dict:
        return {
            "source": self.source,
            "benchmark_data": self.benchmark_data,
            "comparison": self.comparison(),
            "identities": self.identities,
            "genuine_comparisons": int(len(self.genuine)),
            "impostor_comparisons": self.impostors,
            "table": self.table(),
        }

    # ------------------------------------------------------------------ storage (checkpoint / JSON)
    def to_dict(self) -> dict:
        """Plain types only (a checkpoint opens with weights_only=True)."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "samples": self.samples,
            "probe_samples": self.probe_samples,
            "source": self.source,
            "benchmark_data": self.benchmark_data,
            "identities": self.identities,
            "impostors": self.impostors,
            "ranks": [int(r) for r in self.ranks],
            "rank_scores": [float(x) for x in self.rank_scores],
            "genuine": [float(x) for x in self.genuine],
        }

    @classmethod
    def from_dict(cls, data, where: str = "the checkpoint") -> "Calibration":
        """Validate a stored table (a checkpoint is a file a user hands us); one sentence if it is wrong."""
        bad = f"The calibration table in {where} is malformed"
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise FaceIDError(f"{bad} (not a {FORMAT} table).")
        if not isinstance(data.get("version"), int) or data["version"] > VERSION:
            raise FaceIDError(f"{bad} (version {data.get('version')!r}; this faceid reads up to {VERSION}).")
        try:
            samples, probe, impostors = int(data["samples"]), int(data["probe_samples"]), int(data["impostors"])
            ranks = np.asarray(data["ranks"], dtype=np.int64).reshape(-1)
            top = np.asarray(data["rank_scores"], dtype=np.float64).reshape(-1)
            genuine = np.asarray(data["genuine"], dtype=np.float64).reshape(-1)
            source, benchmark = str(data["source"]), data["benchmark_data"]
            identities = int(data.get("identities", 0))
        except (KeyError, TypeError, ValueError):
            raise FaceIDError(f"{bad} (missing or non-numeric fields).") from None
        scores_ok = all(len(a) and np.isfinite(a).all() and np.abs(a).max() <= 1.0 + 1e-4 for a in (top, genuine))
        if not (
            scores_ok
            and min(samples, probe) >= 1
            and isinstance(benchmark, bool)
            and len(ranks) == len(top)
            and ranks[0] == 0
            and ranks[-1] < impostors
            and np.all(np.diff(ranks) > 0)
            and np.all(np.diff(top) <= 0)
            and np.all(np.diff(genuine) >= 0)
        ):
            raise FaceIDError(f"{bad} (scores must be sorted cosines in [-1, 1] and counts consistent).")
        return cls(ranks, top, impostors, genuine, samples, probe, source, benchmark, identities)


# ---------------------------------------------------------------------------- a table for backbone weights

MAX_FILE_BYTES = 16 << 20


def write_calibration_file(path, table: Calibration, fingerprint: str, report: dict | None = None) -> None:
    """A table for weights without a checkpoint (evaluate_model.py --calibrate): tied to their fingerprint."""
    from ..core.fileio import atomic_write_json

    atomic_write_json(path, {"fingerprint": fingerprint, "calibration": table.to_dict(), "report": report or {}})


def read_calibration_file(path, fingerprint: str) -> Calibration:
    """Read a table written by `write_calibration_file`; refuse one made for another model (one sentence)."""
    import json
    import os

    try:
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            raise FaceIDError(
                f"The calibration file {path} is {size:,} bytes; a table is far smaller, so it is not one."
            )
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except OSError as err:
        raise FaceIDError(f"Cannot read the calibration file {path}: {err.strerror or err}.") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise FaceIDError(f"The calibration file {path} is not JSON.") from None
    if not isinstance(data, dict) or "calibration" not in data:
        raise FaceIDError(f"{path} is not a calibration file (no 'calibration' table).")
    if data.get("fingerprint") != fingerprint:
        raise FaceIDError(
            f"The calibration file {path} was measured for model {data.get('fingerprint')!r}, not the "
            f"loaded {fingerprint}; calibrate this model."
        )
    return Calibration.from_dict(data["calibration"], where=str(path))
