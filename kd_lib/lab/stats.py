"""Is a difference between two training recipes larger than the seed-to-seed noise?

Small students trained with different seeds end a point or more apart, so a claim such as
"recipe A beats recipe B" needs an interval, not two means. When both recipes ran with the same
seeds (the same initial weights and batch order), the per-seed differences ``a_i - b_i`` cancel
much of that noise; :func:`paired_difference` gives their mean with a Student-t confidence
interval. :func:`difference` is the unpaired (Welch) version for runs that share no seeds.

    gain = paired_difference(distilled, scratch)          # lists of per-seed accuracies
    print(gain.scaled(100).describe("points"))            # +4.1 points (95% CI +2.9 to +5.3, ...)
    assert gain.low > 0                                   # A beats B at 95% confidence

A claim asserted this way can still fail by bad luck at another set of seeds (about once in
``1 / (1 - confidence)`` tries for a difference that is just at the edge). Assert only the claims
whose interval is far from zero, and report the others as measured.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

__all__ = ["Difference", "paired_difference", "difference", "mean_interval", "t_quantile"]


@dataclass(frozen=True)
class Difference:
    """The mean of ``a - b`` and a two-sided confidence interval ``[low, high]``."""

    mean: float
    low: float
    high: float
    confidence: float
    n: int  # pairs (paired), values (one sample) or the smaller sample (Welch)
    kind: str  # "paired", "one sample" or "Welch"

    @property
    def paired(self) -> bool:
        return self.kind == "paired"

    @property
    def excludes_zero(self) -> bool:
        """True when the interval lies entirely above or entirely below 0."""
        return self.low > 0 or self.high < 0

    def scaled(self, factor: float) -> "Difference":
        """The same difference in other units, e.g. ``scaled(100)`` for accuracy points."""
        low, high = sorted((self.low * factor, self.high * factor))
        return replace(self, mean=self.mean * factor, low=low, high=high)

    def __neg__(self) -> "Difference":
        """The same comparison the other way round: ``b - a``."""
        return self.scaled(-1)

    def describe(self, unit: str = "", digits: int = 1) -> str:
        unit = f" {unit}" if unit else ""
        kind = {"paired": f"{self.n} paired seeds", "one sample": f"{self.n} seeds"}.get(self.kind, f"Welch, n={self.n}")
        return (f"{self.mean:+.{digits}f}{unit} ({self.confidence:.0%} CI {self.low:+.{digits}f} "
                f"to {self.high:+.{digits}f}, {kind})")

    def __str__(self) -> str:
        return self.describe(digits=3)


def _check(values: Sequence[float], name: str) -> list:
    values = [float(v) for v in values]
    if len(values) < 2:
        raise ValueError(f"{name} needs at least 2 values, got {len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name} contains NaN or inf")
    return values


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _mean_var(values: list) -> tuple:
    mean = sum(values) / len(values)
    return mean, sum((v - mean) ** 2 for v in values) / (len(values) - 1)


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Difference:
    """Mean of the per-seed differences ``a[i] - b[i]`` with a Student-t interval (n - 1 df).

    ``a[i]`` and ``b[i]`` must come from the same seed. Raises ``ValueError`` for fewer than two
    pairs, unequal lengths, NaN/inf, or a confidence outside (0, 1).
    """
    a, b = _check(a, "a"), _check(b, "b")
    _check_confidence(confidence)
    if len(a) != len(b):
        raise ValueError(f"paired results need the same seeds on both sides, got {len(a)} and {len(b)} values")
    diffs = [x - y for x, y in zip(a, b)]
    mean, var = _mean_var(diffs)
    half = t_quantile(0.5 + confidence / 2, len(diffs) - 1) * math.sqrt(var / len(diffs))
    return Difference(mean, mean - half, mean + half, confidence, len(diffs), "paired")


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> Difference:
    """The mean of ``values`` (one per seed) with a Student-t interval: is it above or below 0?"""
    values = _check(values, "values")
    _check_confidence(confidence)
    mean, var = _mean_var(values)
    half = t_quantile(0.5 + confidence / 2, len(values) - 1) * math.sqrt(var / len(values))
    return Difference(mean, mean - half, mean + half, confidence, len(values), "one sample")


def difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Difference:
    """``mean(a) - mean(b)`` with Welch's interval, for runs that do not share seeds."""
    a, b = _check(a, "a"), _check(b, "b")
    _check_confidence(confidence)
    (mean_a, var_a), (mean_b, var_b) = _mean_var(a), _mean_var(b)
    se2 = var_a / len(a) + var_b / len(b)
    if se2 == 0:
        df = len(a) + len(b) - 2
    else:
        df = se2**2 / ((var_a / len(a)) ** 2 / (len(a) - 1) + (var_b / len(b)) ** 2 / (len(b) - 1))
    half = t_quantile(0.5 + confidence / 2, df) * math.sqrt(se2)
    mean = mean_a - mean_b
    return Difference(mean, mean - half, mean + half, confidence, min(len(a), len(b)), "Welch")


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (Lentz's method)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _incomplete_beta(a: float, b: float, x: float) -> float:
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1 - x) / b


def _t_cdf(t: float, df: float) -> float:
    tail = 0.5 * _incomplete_beta(df / 2, 0.5, df / (df + t * t))
    return 1 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t distribution with ``df`` degrees of freedom."""
    if not 0 < p < 1 or df <= 0:
        raise ValueError(f"need 0 < p < 1 and df > 0, got p={p}, df={df}")
    low, high = -1e3, 1e3
    for _ in range(200):  # bisection: the cdf is monotone
        middle = (low + high) / 2
        low, high = (middle, high) if _t_cdf(middle, df) < p else (low, middle)
    return (low + high) / 2
