"""Score -> false-accept tables measured the way the app compares, and the thresholds read from them.

Why a table and not one number: the app makes two decisions. verify (1:1) needs the threshold at a
false-accept rate (FAR) per comparison; identify (1:N) compares a stranger with every one of N enrolled
people, so the chance that *someone* is accepted (FPIR, the false-positive identification rate) grows
with N: about 1 - (1 - FAR)^N (~1% at N=10, ~10% at N=100, ~63% at N=1,000 for FAR 1e-3). The table
keeps the highest impostor scores, so any FAR (or FPIR for any gallery size) can be read from it later.

What is compared: a template of ``samples`` images against a probe of ``probe_samples`` images of held-out
people (`faceid.model.heldout` builds the scores). One table holds a kind per sample count the app uses (5 vs 3,
1 vs 3, 5 vs 1, 1 vs 1: `variants`); a decision reads the kind of the comparison it makes
(`Calibration.for_comparison`) and says so when the table has no exact one. Each kind carries its margin
(`faceid.model.margin`): how far ahead of the others a candidate must be.

Resolution: a FAR is "resolved" when at least 100/FAR impostor comparisons were made. Below that, the
rate comes with its 95% interval (Wilson). A target below 1/impostors is past the highest impostor score
measured: the threshold comes from a tail fit of the highest scores (`faceid.model.tail_fit`, stated with its
95% range), or, for a table too small to fit, is the strictest point measured, marked so.

FPIR by gallery size uses FPIR = 1 - (1 - FAR)^N (independent impostor scores): the evaluator's 1:N mode
measures the real FPIR on people never seen, to check it.

Training's validation and the evaluator both build tables with `heldout.build_tables`; the checkpoint stores
`to_dict()`; the app reads it with `from_dict`. Benchmark data (LFW, .bin files) is never used unless
explicitly asked, and then `benchmark_data` says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

from ..core.errors import FaceIDError
from ..core.fileio import require_regular_file
from ..core.validate import Fields, load_json, shown
from .margin import DEFAULT_MARGIN, Margin, MarginMeasure, margin_text
from .tail_fit import TAIL_EXCEEDANCES, TailFit

SAMPLES = 5  # images averaged into a registered template (the app's --samples default)
PROBE_SAMPLES = 3  # frames averaged into a probe (the app's --probe-samples default)
FAR_TARGET = 1e-3  # verify's default per-comparison false-accept rate
FPIR_TARGET = 1e-3  # identify's default chance that an unregistered person is accepted as someone
RESOLVE_FACTOR = 100  # a rate is resolved with at least this many / rate impostor comparisons
MAX_TABLE_FAR = 0.1  # the table keeps the impostor scores needed for any FAR up to this
FORMAT = "faceid-calibration"
VERSION = 2  # 2: a kind per sample count (variants), each with its margin; the real genuine count


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
class Threshold:
    """A decision threshold and what it means; `text` is what the app prints. `source` says where it came from:
    "table" (read from a calibration table at a target rate; the reading's fields are then set), "gallery"
    (read from the gallery's own cross-person template pairs, or raised to what they show:
    `faceid.model.gallery_pairs`), "option" (``--threshold``), "checkpoint" (a checkpoint's single 1:1
    threshold, uncalibrated for 1:N) or "default" (the seed's uncalibrated 0.6)."""

    value: float
    text: str
    source: str = "table"
    rate_name: str | None = None  # "FAR" or "FPIR"
    target: float | None = None
    gallery_size: int | None = None
    rate: float | None = None  # the measured rate at this threshold (per comparison for FAR; per gallery for FPIR)
    rate_high: float | None = None  # upper end of its 95% interval
    resolved: bool = False
    beyond_data: bool = False  # the target is below 1/impostors: past the highest impostor score measured
    tar: float | None = None  # genuine template/probe comparisons accepted
    tail_fit: bool = False  # read from the tail fit (beyond_data and a table big enough to fit)
    value_range: tuple[float, float] | None = None  # the tail fit's 95% range of this threshold
    measured_for: str | None = None  # the table's comparison kind ("template of 5 vs probe of 3")
    used_for: str | None = None  # the comparison made, when the table has no kind for it
    gallery: dict | None = None  # what the gallery's own pairs said about it (`gallery_pairs.GalleryPairs`)

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
            "tail_fit": self.tail_fit,
            "threshold_95_range": None if self.value_range is None else [round(v, 6) for v in self.value_range],
            "measured_for": self.measured_for,
            "used_for": self.used_for,
            "gallery": self.gallery,
        }

    def decision_fields(self) -> dict:
        """What a decision's JSON says about its threshold."""
        return {
            "threshold": round(self.value, 4),
            "threshold_source": self.source,
            "threshold_text": self.text,
            "calibration": self.to_dict() if self.source in ("table", "gallery") else None,
        }


@dataclass(frozen=True)
class Reading:
    """One reading of a table at a per-comparison FAR: the threshold, the rate it stands for and its 95% upper
    bound, and how it was read (measured ranks, past them by the tail fit, or the strictest point)."""

    value: float
    rate: float
    low: float
    high: float
    beyond: bool
    fit: TailFit | None = None
    value_range: tuple[float, float] | None = None


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
    """One comparison kind's impostor tail and genuine scores, and the other kinds measured with it.

    ranks / rank_scores: rank_scores[i] is the (ranks[i]+1)-th highest impostor score (ranks ascending from 0);
    impostors: how many impostor comparisons were made; genuine: sorted genuine scores (or their quantiles),
    genuine_total: how many there were; margin: this kind's measured margin (None: too few people with two
    templates); variants: the tables of the other kinds (each without variants of its own).
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
    margin: MarginMeasure | None = None
    variants: tuple[Calibration, ...] = field(default=(), repr=False)
    genuine_total: int = 0

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
        margin: MarginMeasure | None = None,
        need_genuine: bool = True,
    ) -> "Calibration":
        impostor = np.asarray(impostor, dtype=np.float64).reshape(-1)
        genuine = np.asarray(genuine, dtype=np.float64).reshape(-1)
        if len(impostor) == 0 or (need_genuine and len(genuine) == 0):
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
            margin,
            (),
            int(len(genuine)),
        )

    def with_variants(self, variants: tuple[Calibration, ...]) -> Calibration:
        """This table with the tables of the other comparison kinds measured alongside."""
        return replace(self, variants=tuple(replace(v, variants=()) for v in variants))

    def kinds(self) -> tuple[Calibration, ...]:
        """Every comparison kind of the table, this one first."""
        return (self, *self.variants)

    def for_comparison(self, samples: int, probe_samples: int) -> Calibration:
        """The kind for a template of `samples` vs a probe of `probe_samples` images: the exact one, else the
        closest kind measured with at most as many images on each side (fewer images, heavier impostor
        tail: a threshold at least as strict), else the closest of all."""
        kinds = self.kinds()
        fewer = [k for k in kinds if k.samples <= samples and k.probe_samples <= probe_samples]
        return min(
            fewer or kinds,
            key=lambda k: (
                abs(k.samples - samples) + abs(k.probe_samples - probe_samples),
                k.samples + k.probe_samples,
            ),
        )

    # ------------------------------------------------------------------ reading the table
    @cached_property
    def tail(self) -> TailFit | None:
        """The tail fit past the highest measured scores (None for a table too small to fit)."""
        m = TAIL_EXCEEDANCES
        if len(self.ranks) <= m or not np.array_equal(self.ranks[: m + 1], np.arange(m + 1)):
            return None
        return TailFit.from_top_scores(self.rank_scores[: m + 1], self.impostors)

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

    def tar_at(self, threshold: float) -> float | None:
        if len(self.genuine) == 0:
            return None
        return float(1.0 - np.searchsorted(self.genuine, threshold, side="left") / len(self.genuine))

    def read(self, far: float, tail: bool = True) -> Reading:
        """The loosest threshold with FAR <= far: from the measured ranks, or past the highest score measured
        by the tail fit (`tail=False`: the strictest point measured instead, as before the fit existed)."""
        if far > MAX_TABLE_FAR:
            raise FaceIDError(
                f"The calibration table covers false-accept rates up to {MAX_TABLE_FAR:g}; {far:g} is outside it."
            )
        beyond = far * self.impostors < 1
        fit = self.tail if tail and beyond else None
        if fit is not None:
            value = fit.threshold_for_far(far)
            return Reading(value, fit.far_at(value), *fit.far_bounds(value), True, fit, fit.threshold_range(far))
        wanted = int(math.floor(far * self.impostors + 1e-9))
        i = int(np.searchsorted(self.ranks, min(wanted, int(self.ranks[-1])), side="right")) - 1
        k = int(self.ranks[i])
        # accept strictly above the (k+1)-th highest impostor score: exactly k accepted (ties aside)
        value = float(np.nextafter(self.rank_scores[i], np.inf))
        return Reading(value, k / self.impostors, *wilson_interval(k, self.impostors), beyond)

    def comparison(self) -> str:
        """What the table was measured for, in words: "template of 5 vs probe of 3"."""
        if self.samples == 0:
            return "template vs template"
        return f"template of {self.samples} vs probe of {self.probe_samples}"

    def threshold_for_far(self, far: float, comparison: tuple[int, int] | None = None, tail: bool = True) -> Threshold:
        """verify: the threshold at this per-comparison FAR, from the kind for `comparison` (template, probe
        images; None: this kind)."""
        table = self if comparison is None else self.for_comparison(*comparison)
        return table._threshold(table.read(far, tail), "FAR", far, None, comparison, f"FAR {far:g}")

    def threshold_for_fpir(
        self, fpir: float, gallery_size: int, comparison: tuple[int, int] | None = None, tail: bool = True
    ) -> Threshold:
        """identify: the threshold at which a stranger is accepted as one of `gallery_size` people with
        probability `fpir`."""
        n = max(int(gallery_size), 1)
        table = self if comparison is None else self.for_comparison(*comparison)
        people = "1 person" if n == 1 else f"{n:,} people"
        return table._threshold(
            table.read(far_for_fpir(fpir, n), tail), "FPIR", fpir, n, comparison, f"FPIR {fpir:g} for {people}"
        )

    def _threshold(self, r: Reading, name, target, n, comparison, rate_words) -> Threshold:
        far = target if n is None else far_for_fpir(target, n)
        resolved = self.impostors * far >= RESOLVE_FACTOR
        rate = r.rate if n is None else fpir_from_far(r.rate, n)
        high = r.high if n is None else fpir_from_far(r.high, n)
        if r.fit is not None and r.value >= 1.0:
            note = (
                f"; past the highest of {self.impostors:,} impostor scores, {r.fit.describe()} reaches this rate "
                f"only at a cosine of 1: no one can be accepted (calibrate on more people)"
            )
        elif r.fit is not None and r.value_range is not None:
            low_v, high_v = r.value_range
            note = (
                f"; past the highest of {self.impostors:,} impostor scores: {r.fit.describe()}, threshold "
                f"95% range {low_v:.3f}-{high_v:.3f}, {name} <= {high:.2g} at 95%"
            )
        elif r.beyond:
            note = (
                f"; the target is below what {self.impostors:,} impostor comparisons can show: strictest "
                f"point measured, {name} <= {high:.2g} at 95%"
            )
        elif not resolved:
            note = f"; coarse: {name} <= {high:.2g} at 95% from {self.impostors:,} impostor comparisons"
        else:
            note = ""
        used = None
        if comparison is not None and tuple(comparison) != (self.samples, self.probe_samples):
            used = f"template of {comparison[0]} vs probe of {comparison[1]}"
        stamp = " ON BENCHMARK DATA" if self.benchmark_data else ""
        kind = self.comparison() + ("" if used is None else f", used for {used} (no table for that)")
        text = f"threshold {r.value:.3f} = {rate_words}, calibrated{stamp} on {self.source}, {kind}{note}"
        return Threshold(
            value=r.value,
            text=text,
            rate_name=name,
            target=float(target),
            gallery_size=n,
            rate=float(rate),
            rate_high=float(high),
            resolved=bool(resolved),
            beyond_data=bool(r.beyond),
            tar=self.tar_at(r.value),
            tail_fit=r.fit is not None,
            value_range=r.value_range,
            measured_for=self.comparison(),
            used_for=used,
        )

    def margin_for(self, comparison: tuple[int, int] | None = None) -> Margin:
        """The margin of the kind for `comparison` (the default, uncalibrated, when it was not measured)."""
        table = self if comparison is None else self.for_comparison(*comparison)
        if table.margin is None:
            return Margin(
                DEFAULT_MARGIN,
                "default",
                f"margin {DEFAULT_MARGIN:.3f} is the UNCALIBRATED default: the calibration table measured none "
                f"(too few held-out people with two templates)",
            )
        return Margin(table.margin.value, "table", margin_text(table.margin, table.comparison()))

    def table(self, fars: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)) -> list[dict]:
        """JSON rows: FAR target -> threshold, measured FAR with its 95% interval, genuine accept rate."""
        rows = []
        for far in fars:
            r = self.read(far)
            rows.append(
                {
                    "far": far,
                    "threshold": round(r.value, 6),
                    "measured_far": r.rate,
                    "far_95": [r.low, r.high],
                    "tar": self.tar_at(r.value),
                    "beyond_data": r.beyond,
                    "tail_fit": r.fit is not None,
                    "resolved": self.impostors * far >= RESOLVE_FACTOR,
                }
            )
        return rows

    def summary(self) -> dict:
        """The table for people: every kind with its counts, margin and FAR rows (the first kind's at the top)."""
        return {**self._kind_summary(), "kinds": [k._kind_summary() for k in self.kinds()]}

    def _kind_summary(self) -> dict:
        return {
            "source": self.source,
            "benchmark_data": self.benchmark_data,
            "comparison": self.comparison(),
            "identities": self.identities,
            "genuine_comparisons": self.genuine_total or int(len(self.genuine)),
            "impostor_comparisons": self.impostors,
            "margin": None if self.margin is None else self.margin.to_dict(),
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
            "genuine_comparisons": self.genuine_total or int(len(self.genuine)),
            "margin": None if self.margin is None else self.margin.to_dict(),
            "variants": [v.to_dict() for v in self.variants],
        }

    @classmethod
    def from_dict(cls, data, where: str = "the checkpoint") -> "Calibration":
        """Validate a stored table (a checkpoint or a JSON file is a file a user hands us; every field goes through
        `faceid.core.validate`), then check that it does not contradict itself (`check_plausible`); one sentence
        if it is wrong."""
        bad = f"The calibration table in {where} is malformed"
        f = Fields(data, bad)
        if f.get("format", None) != FORMAT:
            raise FaceIDError(f"{bad} (not a {FORMAT} table).")
        f.whole("version", 1, VERSION)
        impostors = f.whole("impostors", 1, MAX_COMPARISONS)
        ranks = f.wholes("ranks", 0, impostors - 1, MAX_RANKS)
        top = f.cosines("rank_scores", MAX_RANKS)
        genuine = f.cosines("genuine", MAX_GENUINE_KEPT)
        if not (
            len(top)
            and len(genuine)
            and len(ranks) == len(top)
            and ranks[0] == 0
            and np.all(np.diff(ranks) > 0)
            and np.all(np.diff(top) <= 0)
            and np.all(np.diff(genuine) >= 0)
        ):
            raise FaceIDError(f"{bad} (scores must be sorted cosines in [-1, 1] and counts consistent).")
        total = f.whole("genuine_comparisons", len(genuine), MAX_COMPARISONS, default=len(genuine))
        table = cls(
            ranks,
            top,
            impostors,
            genuine,
            f.whole("samples", 1, MAX_IMAGES),
            f.whole("probe_samples", 1, MAX_IMAGES),
            f.text("source"),
            f.flag("benchmark_data"),
            f.whole("identities", 0, MAX_IDENTITIES, default=0),
            _margin_from_dict(f, bad),
            (),
            total,
        )
        table.check_plausible(where)
        variants = f.items("variants", MAX_KINDS, default=[])
        if variants and "variants" in where:
            raise FaceIDError(f"{bad} (variants must be tables without variants of their own).")
        kinds = [cls.from_dict(v, where=f"{where} (variants)") for v in variants]
        if len({(k.samples, k.probe_samples) for k in (table, *kinds)}) != len(kinds) + 1:
            raise FaceIDError(f"{bad} (two tables for the same comparison kind).")
        return table.with_variants(tuple(kinds))

    def check_plausible(self, where: str) -> None:
        """Refuse a table its own numbers contradict. Cosines between different people's faces centre on a
        positive mean (for embeddings drawn alike, the mean of T . P is the squared length of the mean embedding,
        never below 0), so when MIN_SIGN_CHECK or more impostor comparisons were made, the highest of them cannot
        be below 0: a table claiming so was written by hand, and its thresholds would let everyone in."""
        if self.impostors >= MIN_SIGN_CHECK and self.rank_scores[0] < 0:
            raise FaceIDError(
                f"The calibration table in {where} contradicts itself: the highest of its {self.impostors:,} impostor "
                f"scores is {self.rank_scores[0]:.3f}, but different people's faces score around a positive mean, so "
                f"it is not a measurement of any face model: calibrate the model (evaluate_model.py --calibrate).",
                "calibration",
            )


MAX_KINDS = 8  # comparison kinds one table may hold
MAX_COMPARISONS = 10**13  # more comparisons than any calibration could make
MAX_RANKS = 10_000  # ranks a table keeps (`_rank_grid`: ~1,300 at MAX_COMPARISONS)
MAX_GENUINE_KEPT = 10_000  # genuine scores a table keeps (`_quantiles`: 2,001)
MAX_IMAGES = 1_000  # images averaged into one template or probe
MAX_IDENTITIES = 10**8  # people a table was measured on
MIN_SIGN_CHECK = 20  # impostor comparisons from which the highest must be above 0 (`check_plausible`)


def _margin_from_dict(f: Fields, bad: str) -> MarginMeasure | None:
    """A stored margin: {"value": cosine gap in [0, 2], "pairs": count, "people": count}, or None."""
    if not f.has("margin"):
        return None
    m = f.sub("margin")
    if set(m.data) != {"value", "pairs", "people"}:
        raise FaceIDError(f"{bad} (margin must hold value, pairs and people).")
    pairs = m.whole("pairs", 1, MAX_COMPARISONS)
    people = m.whole("people", 1, pairs)
    return MarginMeasure(m.real("value", 0.0, 2.0, what="a cosine gap"), pairs, people)


# ---------------------------------------------------------------------------- a table for backbone weights

MAX_FILE_BYTES = 16 << 20


def write_calibration_file(path, table: Calibration, fingerprint: str, report: dict | None = None) -> None:
    """A table for weights without a checkpoint (evaluate_model.py --calibrate): tied to their fingerprint."""
    from ..core.fileio import atomic_write_json

    atomic_write_json(path, {"fingerprint": fingerprint, "calibration": table.to_dict(), "report": report or {}})


def read_calibration_file(path, fingerprint: str) -> Calibration:
    """Read a table written by `write_calibration_file`; refuse one made for another model (one sentence)."""

    size = require_regular_file(path, "The calibration file").st_size  # a pipe would block the open below
    try:
        if size > MAX_FILE_BYTES:
            raise FaceIDError(
                f"The calibration file {path} is {size:,} bytes; a table is far smaller, so it is not one."
            )
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise FaceIDError(f"Cannot read the calibration file {path}: {err.strerror or err}.") from None
    data = load_json(raw, f"The calibration file {path}")
    if not isinstance(data, dict) or "calibration" not in data:
        raise FaceIDError(f"{path} is not a calibration file (no 'calibration' table).")
    if data.get("fingerprint") != fingerprint:
        raise FaceIDError(
            f"The calibration file {path} was measured for model {shown(data.get('fingerprint'))}, not the "
            f"loaded {fingerprint}; calibrate this model."
        )
    return Calibration.from_dict(data["calibration"], where=str(path))
