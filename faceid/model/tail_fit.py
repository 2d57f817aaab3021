"""Thresholds past the highest measured impostor score: a generalised Pareto fit of the impostor tail.

Why: a table of n impostor comparisons can show false-accept rates down to about 1/n. Identify at a large
gallery needs far smaller per-comparison rates (FPIR 1e-3 among 1,000 people is a FAR of 1e-6), and a
threshold frozen at the highest score measured lets far more strangers in than asked (issue 23: 6x the
FPIR at N = 1,000). Extreme-value theory says the scores above a high level u follow, approximately, a
generalised Pareto distribution (GPD) whatever the scores' own distribution:

    P(score > u + y | score > u) = (1 + xi * y / sigma) ** (-1 / xi)      (exp(-y / sigma) when xi = 0)

so P(score > x) = (m / n) * that, with m of the n scores above u. Cosines are bounded by 1, so the shape xi is
negative (a tail with an end point, u - sigma / xi, at most 1: a fit that ends past 1 is replaced by the one of
the same mean ending at 1).

The fit: u is the (m+1)-th highest score, the m scores above it are the exceedances (the table keeps the top
100 exactly: `calibration._rank_grid`), and (xi, sigma) are estimated by probability-weighted moments
(Hosking & Wallis 1987: closed form, numpy only, well behaved for xi < 0.5 and small m). Its uncertainty comes
from a bootstrap over the exceedances (seeded, so the same table always gives the same threshold): the
threshold is the fit's estimate, and its stated 95% bound is the 97.5th percentile of the false-accept rate
the bootstrap fits give at that threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

TAIL_EXCEEDANCES = 100  # scores above the level u that the fit uses (the table keeps these exactly)
TAIL_MIN_IMPOSTORS = 1_000  # fewer comparisons than this: no fit (m would be most of the data)
BOOTSTRAP = 400  # bootstrap fits for the 95% bounds
SEED = 23


def _pwm_fit(exceedances: np.ndarray, room: float) -> tuple[float, float]:
    """(xi, sigma) of a GPD by probability-weighted moments (Hosking & Wallis 1987); exceedances >= 0 over a
    level u, room = 1 - u (a cosine never exceeds 1).

    A fit whose tail would run past a cosine of 1 (xi >= 0, or an end point u - sigma/xi above 1: a small or
    lumpy sample) is replaced by the GPD with the same mean that ends exactly at 1, the heaviest tail a
    cosine can have; otherwise a threshold could be pushed to 1 and nobody accepted at all."""
    y = np.sort(np.asarray(exceedances, dtype=np.float64))
    m = len(y)
    p = (np.arange(1, m + 1) - 0.35) / m
    a0 = float(y.mean())
    a1 = float(np.mean((1.0 - p) * y))
    denom = a0 - 2.0 * a1
    if a0 > 0 and denom > 0:
        xi, sigma = -(a0 / denom - 2.0), 2.0 * a0 * a1 / denom  # Hosking-Wallis k = -xi
        if xi < 0 and sigma > 0 and -sigma / xi <= room:
            return xi, sigma
    if a0 <= 0 or a0 >= room:  # all exceedances (nearly) zero, or no room left below 1
        return -1.0, max(a0, 1e-9) * 2
    # the GPD with mean a0 = sigma / (1 - xi) and end point u + room: xi = -sigma / room
    sigma = a0 * room / (room - a0)
    return -sigma / room, sigma


def _survival(y: np.ndarray | float, xi: float, sigma: float) -> np.ndarray:
    """P(exceedance > y) under the GPD (0 past the end point of a bounded tail)."""
    y = np.maximum(np.asarray(y, dtype=np.float64), 0.0)
    if abs(xi) < 1e-9:
        return np.exp(-y / sigma)
    base = 1.0 + xi * y / sigma
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(base > 0, np.power(np.maximum(base, 1e-300), -1.0 / xi), 0.0)


def _quantile(q: float, xi: float, sigma: float) -> float:
    """The exceedance y with P(exceedance > y) = q (0 < q <= 1)."""
    if abs(xi) < 1e-9:
        return -sigma * math.log(q)
    return sigma / xi * (q ** (-xi) - 1.0)


@dataclass(frozen=True)
class TailFit:
    """A GPD fitted to the `m` highest of `n` impostor scores, above the level `u`.

    xi, sigma: the fit; boot: (BOOTSTRAP, 2) bootstrap fits (xi, sigma) for the uncertainty."""

    u: float
    m: int
    n: int
    xi: float
    sigma: float
    boot: np.ndarray

    @classmethod
    def from_top_scores(cls, top: np.ndarray, n: int) -> TailFit | None:
        """Fit on the highest scores of n (top: sorted descending, at least TAIL_EXCEEDANCES + 1 of them);
        None when there are too few comparisons for a fit to mean anything."""
        top = np.asarray(top, dtype=np.float64)
        if n < TAIL_MIN_IMPOSTORS or len(top) < TAIL_EXCEEDANCES + 1:
            return None
        m = TAIL_EXCEEDANCES
        u = float(top[m])
        y = top[:m] - u
        if not np.all(np.isfinite(y)) or float(y.max()) <= 0:
            return None
        xi, sigma = _pwm_fit(y, 1.0 - u)
        rng = np.random.default_rng(SEED)
        boot = np.array([_pwm_fit(rng.choice(y, m), 1.0 - u) for _ in range(BOOTSTRAP)])
        return cls(u, m, int(n), float(xi), float(sigma), boot)

    def far_at(self, threshold: float) -> float:
        """The fitted false-accept rate of accepting scores >= threshold (for thresholds above u)."""
        return float(self.m / self.n * _survival(threshold - self.u, self.xi, self.sigma))

    def far_bounds(self, threshold: float) -> tuple[float, float]:
        """The 2.5th and 97.5th percentiles over the bootstrap fits of the false-accept rate at `threshold`."""
        rates = [self.m / self.n * float(_survival(threshold - self.u, xi, s)) for xi, s in self.boot]
        low, high = np.percentile(rates, [2.5, 97.5])
        return float(low), float(high)

    def threshold_for_far(self, far: float) -> float:
        """The score whose fitted false-accept rate is `far` (below m / n: past u), at most 1."""
        q = min(1.0, far * self.n / self.m)
        return float(min(1.0, self.u + _quantile(q, self.xi, self.sigma)))

    def threshold_range(self, far: float) -> tuple[float, float]:
        """The bootstrap's 95% range of the threshold at `far`."""
        q = min(1.0, far * self.n / self.m)
        values = [min(1.0, self.u + _quantile(q, xi, s)) for xi, s in self.boot]
        low, high = np.percentile(values, [2.5, 97.5])
        return float(low), float(high)

    def describe(self) -> str:
        """The fit in words, for the decision line."""
        return f"tail fit (generalised Pareto on the {self.m} highest of {self.n:,} impostor scores)"
