"""Drift statistics: reference-quantile bins, PSI, KS p-values, chi-square and Cramér's V, histograms."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Kind = Literal["numeric", "categorical"]

# Effect-size floors that pair with the significance tests (see the module docstring).
MIN_KS_STATISTIC = 0.1
MIN_CRAMERS_V = 0.1
# Share of current rows in categories the reference never saw that counts as drift.
MAX_UNSEEN_SHARE = 0.05
DEFAULT_EPSILON = 1e-4
NO_CHAMPION_REASON = "no champion yet: bootstrap training"

NAN = float("nan")


def _fmt(value: float | None) -> str:
    """Numbers in sentences: 4 significant digits, NaN spelled out."""
    return "n/a" if value is None or math.isnan(value) else f"{value:.4g}"


# --------------------------------------------------------------------------- bins


def quantile_levels(bins: int) -> list[float]:
    """Interior quantile levels ``1/bins .. (bins-1)/bins`` that cut the reference into ``bins`` bins."""
    if bins < 2:
        raise ValueError(f"bins must be at least 2, got {bins}")
    return [i / bins for i in range(1, bins)]


def reference_bin_edges(quantiles: Sequence[float | None] | None) -> tuple[float, ...]:
    """Interior bin edges from reference quantiles: finite, sorted and deduplicated.

    ``None`` (an empty reference) or missing quantiles give no edges, i.e. a single bin.
    """
    if quantiles is None:
        return ()
    finite = {float(q) for q in quantiles if q is not None and math.isfinite(float(q))}
    return tuple(sorted(finite))


def bin_index(values: np.ndarray | Sequence[float], edges: Sequence[float]) -> np.ndarray:
    """The bin (0..len(edges)) of each value, with PostgreSQL ``width_bucket(value, edges)`` semantics."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64), np.asarray(values, dtype=np.float64), side="right")


def histogram_counts(values: np.ndarray | Sequence[float], edges: Sequence[float]) -> np.ndarray:
    """Counts per reference bin of the non-NaN ``values`` (the numpy twin of the SQL bin counts)."""
    array = np.asarray(values, dtype=np.float64)
    array = array[~np.isnan(array)]
    return np.bincount(bin_index(array, edges), minlength=len(edges) + 1)


def bin_labels(edges: Sequence[float]) -> tuple[str, ...]:
    """Readable labels for the open-ended bins defined by ``edges``."""
    if not edges:
        return ("all",)
    labels = [f"< {_fmt(edges[0])}"]
    labels += [f"[{_fmt(lo)}, {_fmt(hi)})" for lo, hi in itertools.pairwise(edges)]
    labels.append(f"≥ {_fmt(edges[-1])}")
    return tuple(labels)


# --------------------------------------------------------------------------- statistics


def smoothed_shares(counts: Sequence[int] | np.ndarray, epsilon: float = DEFAULT_EPSILON) -> np.ndarray:
    """Shares of ``counts`` with empty bins raised to ``epsilon`` (then renormalised), so logs stay finite."""
    array = np.asarray(counts, dtype=np.float64)
    total = array.sum()
    if total <= 0:
        raise ValueError("cannot take shares of an empty sample")
    shares = np.where(array > 0, array / total, epsilon)
    return shares / shares.sum()


def psi(
    reference_counts: Sequence[int] | np.ndarray,
    current_counts: Sequence[int] | np.ndarray,
    epsilon: float = DEFAULT_EPSILON,
) -> float:
    """Population stability index over aligned bins: sum((cur - ref) * ln(cur / ref)) of smoothed shares.

    NaN when either sample is empty. Rules of thumb: < 0.1 stable, 0.1-0.2 moderate, > 0.2 shifted.
    """
    ref = np.asarray(reference_counts, dtype=np.float64)
    cur = np.asarray(current_counts, dtype=np.float64)
    if ref.shape != cur.shape:
        raise ValueError(f"bins are not aligned: {ref.shape[0]} reference vs {cur.shape[0]} current")
    if ref.sum() <= 0 or cur.sum() <= 0:
        return NAN
    p, q = smoothed_shares(ref, epsilon), smoothed_shares(cur, epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


def ks_pvalue(statistic: float, n_ref: int, n_cur: int) -> float:
    """Two-sided p-value of a two-sample KS statistic (scipy's asymptotic method in ``ks_2samp``).

    Uses the one-sample distribution ``kstwo`` at the effective size n_ref*n_cur/(n_ref+n_cur).
    With ties (discrete features) the test is conservative: p-values are too large, never too small.
    """
    if n_ref <= 0 or n_cur <= 0 or statistic is None or math.isnan(statistic):
        return NAN
    from scipy import stats

    effective_n = round(n_ref * n_cur / (n_ref + n_cur))
    return float(np.clip(stats.kstwo.sf(float(statistic), max(effective_n, 1)), 0.0, 1.0))


@dataclass(frozen=True)
class ChiSquare:
    """Chi-square test of a 2 x k table (reference vs current), with effect size and unseen categories."""

    statistic: float
    pvalue: float
    dof: int
    cramers_v: float
    # category -> share of the current rows, for categories absent from the reference
    unseen_categories: dict[str, float] = field(default_factory=dict)

    @property
    def unseen_share(self) -> float:
        return float(sum(self.unseen_categories.values()))


def balanced_cramers_v(reference_counts: Sequence[int], current_counts: Sequence[int]) -> float:
    """Cramér's V of the 2 x k table of shares: sqrt(1/2 * sum((p - q)^2 / (p + q))), in [0, 1].

    Equal to V on raw counts when both samples have the same size; unlike that V it does
    not depend on the ratio of the sample sizes.
    """
    ref = np.asarray(reference_counts, dtype=np.float64)
    cur = np.asarray(current_counts, dtype=np.float64)
    if ref.sum() <= 0 or cur.sum() <= 0:
        return NAN
    p, q = ref / ref.sum(), cur / cur.sum()
    pooled = p + q
    mask = pooled > 0
    return float(math.sqrt(0.5 * np.sum((p[mask] - q[mask]) ** 2 / pooled[mask])))


def chi_square(reference_counts: Mapping[str, int], current_counts: Mapping[str, int]) -> ChiSquare:
    """Chi-square test of homogeneity on the categories seen in either sample.

    No continuity correction (so the statistic matches the effect size); a single category
    gives statistic 0 and p-value 1.
    """
    seen = {c for c, n in reference_counts.items() if n > 0} | {c for c, n in current_counts.items() if n > 0}
    categories = sorted(seen)
    ref = np.array([reference_counts.get(c, 0) for c in categories], dtype=np.int64)
    cur = np.array([current_counts.get(c, 0) for c in categories], dtype=np.int64)
    cur_total = int(cur.sum())
    unseen: dict[str, float] = {}
    if cur_total:
        unseen = {c: float(n / cur_total) for c, r, n in zip(categories, ref, cur, strict=True) if r == 0 and n > 0}
    if ref.sum() == 0 or cur_total == 0:
        return ChiSquare(NAN, NAN, 0, NAN, unseen)
    if len(categories) < 2:
        return ChiSquare(0.0, 1.0, 0, 0.0, unseen)
    from scipy import stats

    result = stats.chi2_contingency(np.vstack([ref, cur]), correction=False)
    return ChiSquare(
        statistic=float(result.statistic),
        pvalue=float(result.pvalue),
        dof=int(result.dof),
        cramers_v=balanced_cramers_v(ref, cur),
        unseen_categories=unseen,
    )


# --------------------------------------------------------------------------- per feature


@dataclass(frozen=True)
class SampleStats:
    """Size and moments of one feature in one window (mean/sd NaN for categorical features)."""

    rows: int
    non_null: int
    mean: float = NAN
    sd: float = NAN

    @property
    def null_share(self) -> float:
        return (self.rows - self.non_null) / self.rows if self.rows else NAN


@dataclass(frozen=True)
class Histogram:
    """Aligned reference and current counts per bin (numeric) or category, for PSI and plots."""

    labels: tuple[str, ...]
    reference: tuple[int, ...]
    current: tuple[int, ...]
    edges: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not len(self.labels) == len(self.reference) == len(self.current):
            raise ValueError("histogram labels and counts are not aligned")

    @staticmethod
    def _shares(counts: tuple[int, ...]) -> list[float]:
        total = sum(counts)
        return [c / total if total else 0.0 for c in counts]

    @property
    def reference_shares(self) -> list[float]:
        return self._shares(self.reference)

    @property
    def current_shares(self) -> list[float]:
        return self._shares(self.current)

    def to_json(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels),
            "edges": list(self.edges),
            "reference": list(self.reference),
            "current": list(self.current),
        }

    @classmethod
    def binned(cls, edges: Sequence[float], reference: Sequence[int], current: Sequence[int]) -> Histogram:
        """A histogram over the open-ended bins of ``edges``."""
        return cls(bin_labels(edges), tuple(map(int, reference)), tuple(map(int, current)), tuple(edges))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Histogram:
        return cls(
            labels=tuple(data["labels"]),
            reference=tuple(int(x) for x in data["reference"]),
            current=tuple(int(x) for x in data["current"]),
            edges=tuple(float(x) for x in data.get("edges", ())),
        )
