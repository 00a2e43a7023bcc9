"""Drift aggregates of one interval, computed in PostgreSQL.

Everything that grows with the data stays in the database: quantiles
(``percentile_cont``/``percentile_disc``), bin counts and moments *per interval*
(``width_bucket`` in one ``GROUP BY GROUPING SETS``: the count matrix the calibrated null
draws whole intervals from), per-category counts per interval and the exact two-sample KS
statistic (values collapsed to per-value counts first, then running sums). Python only sees
a few numbers per feature and interval, plus the (label, prediction) pairs for live
performance, which are streamed through a server-side cursor and capped (newest rows first).

Windows
    *reference*  warehouse rows with event_time in [reference_start, reference_end): the
                 champion's training window;
    *current*    warehouse rows with event_time in [interval_start, interval_end), or, with
                 ``drift.window_intervals`` > 1, from the start of the oldest pooled interval.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import numpy as np
import psycopg2.extensions
from psycopg2 import sql

from nightly_ml import db
from nightly_ml.monitoring.binary_copy import PairSink
from nightly_ml.monitoring.drift import (
    FeatureDrift,
    PredictionDrift,
    categorical_feature_drift,
    numeric_feature_drift,
    prediction_drift,
)
from nightly_ml.monitoring.listings import loaded_intervals, scored_intervals
from nightly_ml.monitoring.plan import CalibrationPlan, IntervalMoments, monitored_features as monitored_features
from nightly_ml.monitoring.statistics import SampleStats, quantile_levels, reference_bin_edges
from nightly_ml.spec import Column, DatasetSpec

log = logging.getLogger(__name__)


REFERENCE, CURRENT = "reference", "current"  # sample names, also spelled out in the monitoring_*.sql files
PREDICTION_FEATURE = "_prediction"  # cannot clash with a feature: spec names start with a letter
LOCK_CLASS = 740_021_003
DEFAULT_PREDICTION_REFERENCE_INTERVALS = 7
DEFAULT_LOOKBACK_DAYS = 14
DEFAULT_MAX_LABELLED_ROWS = 1_000_000
FETCH_ROWS = 50_000
HISTORY_LIMIT = 90


class MonitoringError(RuntimeError):
    """An interval cannot be monitored (no reference or no current rows, bad arguments)."""


# --------------------------------------------------------------------------- samples


@dataclass(frozen=True)
class Windows:
    """The reference window and the current interval, as half-open event-time ranges."""

    reference_start: datetime
    reference_end: datetime
    current_start: datetime
    current_end: datetime
    # start of the oldest interval the current sample pools (None: the current interval alone)
    pool_start: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("reference_start", "reference_end", "current_start", "current_end"):
            if getattr(self, name).tzinfo is None:
                raise MonitoringError(f"{name} must be timezone-aware, got {getattr(self, name)!r}")
        if not self.reference_start < self.reference_end:
            raise MonitoringError(f"empty reference window [{self.reference_start}, {self.reference_end})")
        if not self.current_start < self.current_end:
            raise MonitoringError(f"empty interval [{self.current_start}, {self.current_end})")

    def params(self) -> dict[str, datetime]:
        return {
            "ref_start": self.reference_start,
            "ref_end": self.reference_end,
            "cur_start": self.current_start,
            "cur_end": self.current_end,
            "pool_start": self.pool_start or self.current_start,
        }


@dataclass(frozen=True)
class SamplePair:
    """Two SELECTs of ``(sample, v)`` -- reference and current -- and the parameters they bind."""

    reference: sql.Composable
    current: sql.Composable
    params: Mapping[str, Any]

    def compose(self, name: str, **identifiers: sql.Composable | str) -> sql.Composed:
        return db.compose(name, reference=self.reference, current=self.current, **identifiers)


def _value_type(column: Column) -> sql.SQL:
    return sql.SQL("float8" if column.is_numeric else "text")


def feature_samples(spec: DatasetSpec, feature: str, windows: Windows) -> SamplePair:
    """The reference and current samples of one feature of the warehouse table."""
    column = spec.feature(feature)

    def sample(name: str, prefix: str) -> sql.Composed:
        return db.compose(
            "monitoring_window_sample.sql",
            sample=sql.Literal(name),
            column=column.name,
            value_type=_value_type(column),
            table=db.warehouse_table(spec),
            event_time=spec.event_time,
            start=sql.Placeholder(f"{prefix}_start"),
            end=sql.Placeholder("cur_end" if prefix == "pool" else f"{prefix}_end"),
        )

    return SamplePair(sample(REFERENCE, "ref"), sample(CURRENT, "pool"), windows.params())


def _prediction_samples(
    spec: DatasetSpec,
    reference_intervals: Sequence[datetime],
    current_intervals: Sequence[datetime],
    model_version: str | None,
) -> SamplePair:
    def sample(name: str, intervals: str) -> sql.Composed:
        return db.compose(
            "monitoring_prediction_sample.sql",
            sample=sql.Literal(name),
            predictions=db.predictions_table(spec),
            intervals=sql.Placeholder(intervals),
            model_version=sql.Placeholder("model_version"),
        )

    params = {
        "ref_intervals": list(reference_intervals),
        "cur_intervals": list(current_intervals),
        "model_version": model_version,
    }
    return SamplePair(sample(REFERENCE, "ref_intervals"), sample(CURRENT, "cur_intervals"), params)


# --------------------------------------------------------------------------- aggregates


def window_rows(conn: psycopg2.extensions.connection, spec: DatasetSpec, windows: Windows) -> tuple[int, int]:
    """Rows in the reference window and in the current interval."""
    statement = db.compose("monitoring_window_rows.sql", table=db.warehouse_table(spec), event_time=spec.event_time)
    with conn.cursor() as cur:
        cur.execute(statement, windows.params())
        reference_rows, current_rows = cur.fetchone()
    return int(reference_rows), int(current_rows)


def profile(
    conn: psycopg2.extensions.connection, pair: SamplePair, *, levels: Sequence[float], discrete: bool = False
) -> tuple[SampleStats, SampleStats, tuple[float, ...]]:
    """Size, mean and sd of both samples, and the reference bin edges at quantile ``levels``.

    ``discrete`` uses ``percentile_disc`` so the edges of an integer feature are observed values.
    """
    percentile = sql.SQL("percentile_disc" if discrete else "percentile_cont")
    found: dict[str, SampleStats] = {}
    quantiles: list[float | None] | None = None
    with conn.cursor() as cur:
        statement = pair.compose("monitoring_numeric_profile.sql", percentile=percentile)
        cur.execute(statement, {**pair.params, "quantiles": list(levels)})
        for sample, rows, non_null, mean, sd, sample_quantiles in cur.fetchall():
            found[sample] = SampleStats(
                rows=int(rows),
                non_null=int(non_null),
                mean=math.nan if mean is None else float(mean),
                sd=math.nan if sd is None else float(sd),
            )
            if sample == REFERENCE:
                quantiles = sample_quantiles
    empty = SampleStats(0, 0)
    return found.get(REFERENCE, empty), found.get(CURRENT, empty), reference_bin_edges(quantiles)


@dataclass(frozen=True)
class IntervalBins:
    """Per-interval counts per reference bin (reference: K x bins, oldest first), current totals, moments."""

    reference: np.ndarray
    current: np.ndarray
    moments: IntervalMoments


def interval_bins(conn: psycopg2.extensions.connection, pair: SamplePair, edges: Sequence[float]) -> IntervalBins:
    """Bin counts per interval (``len(edges) + 1`` bins, nulls left out) and the reference's per-interval moments."""
    bins = len(edges) + 1
    counts: dict[str, dict[datetime, np.ndarray]] = {REFERENCE: {}, CURRENT: {}}
    moments: dict[datetime, tuple[int, float, float]] = {}
    with conn.cursor() as cur:
        cur.execute(pair.compose("monitoring_interval_bins.sql"), {**pair.params, "edges": [float(e) for e in edges]})
        for sample, interval, bin_number, n, mean, variance in cur.fetchall():
            if bin_number is None:
                if sample == REFERENCE:
                    moments[interval] = (int(n), float(mean), float(variance))
                continue
            row = counts[sample].setdefault(interval, np.zeros(bins, dtype=np.int64))
            row[bin_number] += n
    reference = counts[REFERENCE]
    order = sorted(reference)
    matrix = np.array([reference[t] for t in order], dtype=np.int64).reshape(len(order), bins)
    current = np.sum(list(counts[CURRENT].values()), axis=0) if counts[CURRENT] else np.zeros(bins, dtype=np.int64)
    stats = [moments[t] for t in sorted(moments)]
    return IntervalBins(
        matrix,
        np.asarray(current, dtype=np.int64),
        IntervalMoments(tuple(m[0] for m in stats), tuple(m[1] for m in stats), tuple(m[2] for m in stats)),
    )


def bin_counts(
    conn: psycopg2.extensions.connection, pair: SamplePair, edges: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Counts per reference bin (``len(edges) + 1`` bins, nulls left out) of both samples."""
    found = interval_bins(conn, pair, edges)
    return found.reference.sum(axis=0), found.current


def ks_statistic(conn: psycopg2.extensions.connection, pair: SamplePair) -> tuple[float, int, int]:
    """The exact two-sample KS statistic (NaN if a sample is empty) and the non-null sample sizes."""
    with conn.cursor() as cur:
        cur.execute(pair.compose("monitoring_ks_statistic.sql"), pair.params)
        statistic, n_ref, n_cur = cur.fetchone()
    value = math.nan if statistic is None or n_ref == 0 or n_cur == 0 else float(statistic)
    return value, int(n_ref), int(n_cur)


CategoryCounts = dict[str | None, int]


def interval_category_counts(
    conn: psycopg2.extensions.connection, pair: SamplePair
) -> tuple[list[CategoryCounts], CategoryCounts]:
    """Rows per category of each reference interval (oldest first) and of the current sample; nulls under None."""
    reference: dict[datetime, CategoryCounts] = {}
    current: CategoryCounts = {}
    with conn.cursor() as cur:
        cur.execute(pair.compose("monitoring_category_counts.sql"), pair.params)
        for sample, interval, category, n in cur.fetchall():
            target = reference.setdefault(interval, {}) if sample == REFERENCE else current
            target[category] = target.get(category, 0) + int(n)
    return [reference[t] for t in sorted(reference)], current


def _summed(parts: Sequence[CategoryCounts]) -> CategoryCounts:
    total: CategoryCounts = {}
    for part in parts:
        for category, n in part.items():
            total[category] = total.get(category, 0) + n
    return total


def category_counts(conn: psycopg2.extensions.connection, pair: SamplePair) -> tuple[CategoryCounts, CategoryCounts]:
    """Rows per category of both samples; nulls are counted under the key ``None``."""
    per_interval, current = interval_category_counts(conn, pair)
    return _summed(per_interval), current


def _category_stats(counts: Mapping[str | None, int]) -> SampleStats:
    rows = sum(counts.values())
    return SampleStats(rows=rows, non_null=rows - counts.get(None, 0))


def _non_null(counts: CategoryCounts) -> dict[str, int]:
    return {k: v for k, v in counts.items() if k is not None}


def feature_drift(
    conn: psycopg2.extensions.connection,
    spec: DatasetSpec,
    feature: str,
    windows: Windows,
    plan: CalibrationPlan | None = None,
) -> FeatureDrift:
    """All drift statistics of one feature, aggregated in the database, and the calibrated verdict."""
    column = spec.feature(feature)
    pair = feature_samples(spec, feature, windows)
    if column.is_numeric:
        reference, current, edges = profile(
            conn, pair, levels=quantile_levels(spec.drift.bins), discrete=column.type == "integer"
        )
        bins = interval_bins(conn, pair, edges)
        statistic, _, _ = ks_statistic(conn, pair)
        return numeric_feature_drift(
            feature,
            edges,
            bins.reference,
            bins.current,
            statistic,
            spec.drift,
            reference=reference,
            current=current,
            plan=plan,
            moments=bins.moments,
        )
    per_interval, cur_counts = interval_category_counts(conn, pair)
    ref_counts = _summed(per_interval)
    return categorical_feature_drift(
        feature,
        _non_null(ref_counts),
        _non_null(cur_counts),
        spec.drift,
        reference=_category_stats(ref_counts),
        current=_category_stats(cur_counts),
        plan=plan,
        interval_counts=[_non_null(c) for c in per_interval],
    )


def pooled_windows(conn: psycopg2.extensions.connection, spec: DatasetSpec, windows: Windows) -> Windows:
    """``windows`` with the current sample widened to the newest ``drift.window_intervals`` loaded intervals.

    Only intervals after the reference window are pooled: the first nights after training pool fewer.
    """
    pooled = spec.drift.window_intervals
    if pooled <= 1:
        return windows
    starts = loaded_intervals(conn, spec, windows.reference_end, windows.current_start, pooled)
    return replace(windows, pool_start=min([*starts, windows.current_start]))


def measure_prediction_drift(
    conn: psycopg2.extensions.connection,
    spec: DatasetSpec,
    interval_start: datetime,
    *,
    champion_version: str | None,
    reference_intervals: int = DEFAULT_PREDICTION_REFERENCE_INTERVALS,
    prediction_interval_start: datetime | None = None,
    plan: CalibrationPlan | None = None,
) -> PredictionDrift | None:
    """Prediction drift of one scored interval against the scored intervals before it (see module doc).

    With ``drift.window_intervals`` > 1 the evaluated interval pools the scored intervals just
    before it, and the reference is the ``reference_intervals`` scored before those.
    None when there is nothing to compare: no scored interval, or none before it.
    """
    pooled = spec.drift.window_intervals
    if prediction_interval_start is None:
        scored = scored_intervals(conn, spec, interval_start, champion_version, reference_intervals + pooled)
        if not scored:
            return None
        evaluated, current, references = scored[0], scored[:pooled], scored[pooled:]
    else:
        evaluated = prediction_interval_start
        earlier = scored_intervals(conn, spec, evaluated, champion_version, reference_intervals + pooled - 1)
        current, references = [evaluated, *earlier[: pooled - 1]], earlier[pooled - 1 :]
    if not references:
        return None
    pair = _prediction_samples(spec, references, current, champion_version)
    # The reference's quantiles fix the bin edges; the current sample (the big one) is read once, binned.
    reference_side = SamplePair(pair.reference, db.compose("monitoring_empty_sample.sql"), pair.params)
    reference, _, edges = profile(conn, reference_side, levels=quantile_levels(spec.drift.bins))
    if reference.non_null == 0:
        return None
    bins = interval_bins(conn, pair, edges)
    if not bins.current.any():  # no non-null prediction in the current sample
        return None
    return prediction_drift(
        edges,
        bins.reference,
        bins.current,
        spec.drift,
        interval_start=evaluated,
        reference_intervals=sorted(references),
        plan=plan,
    )


def labelled_pairs_statement(spec: DatasetSpec) -> sql.Composed:
    """The query of :func:`labelled_pairs` (parameters: window_start, window_end, model_version, max_rows and
    first_interval, from :func:`window_first_interval`)."""
    return db.compose(
        "monitoring_labelled_pairs.sql",
        warehouse=db.warehouse_table(spec),
        predictions=db.predictions_table(spec),
        key=spec.key.name,
        event_time=spec.event_time,
        label=spec.label.name,
        label_cast=sql.SQL("integer" if spec.label.type == "boolean" else "float8"),
    )


def window_first_interval(
    conn: psycopg2.extensions.connection, spec: DatasetSpec, window_start: datetime, window_end: datetime
) -> datetime | None:
    """The interval of the window's earliest row (``None``: the window has no rows)."""
    statement = db.compose(
        "monitoring_window_first_interval.sql", warehouse=db.warehouse_table(spec), event_time=spec.event_time
    )
    with conn.cursor() as cur:
        cur.execute(statement, {"window_start": window_start, "window_end": window_end})
        row = cur.fetchone()
    return None if row is None else row[0]


def labelled_pairs(
    conn: psycopg2.extensions.connection,
    spec: DatasetSpec,
    window_start: datetime,
    window_end: datetime,
    *,
    champion_version: str | None,
    max_rows: int = DEFAULT_MAX_LABELLED_ROWS,
) -> tuple[np.ndarray, np.ndarray]:
    """(labels, predictions) of the window's labelled, scored rows, streamed in chunks; newest ``max_rows``."""
    first_interval = window_first_interval(conn, spec, window_start, window_end)
    if first_interval is None:
        return np.empty(0), np.empty(0)
    statement = labelled_pairs_statement(spec)
    params = {
        "window_start": window_start,
        "window_end": window_end,
        "model_version": champion_version,
        "max_rows": max_rows,
        "first_interval": first_interval,
    }
    # Binary COPY: every row is two NOT NULL float8 fields, a fixed 26-byte record numpy reads in place.
    sink = PairSink(FETCH_ROWS)
    with conn.cursor() as cur:
        cur.execute(db.load_sql("monitoring_work_mem.sql"))
        cur.copy_expert(f"COPY ({cur.mogrify(statement, params).decode()}) TO STDOUT WITH (FORMAT binary)", sink)
    pairs = sink.pairs()
    return pairs["label"].astype(np.float64), pairs["prediction"].astype(np.float64)
