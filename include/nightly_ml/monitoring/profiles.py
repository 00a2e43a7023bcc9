"""Drift of every monitored feature in two scans of the interval, against a reference profile cached per champion.

The reference (the champion's training window) does not change while the champion does, so its side of
every statistic -- bin edges, per-interval bin or category counts, moments, sample sizes and the counts
of a fine quantile grid -- is computed once (:func:`compute_reference`: three scans of the window) and
kept in ``ops.reference_profile`` keyed by model name, version and feature (:func:`store_reference`).
Each night then reads the current sample twice (:func:`feature_drifts`): one scan for sizes, means and
sds, one ``GROUPING SETS`` scan for every feature's counts.

The KS statistic comes from the fine grid (``FINE_BINS`` reference quantiles, merged with the bin edges):
the largest gap of the two ECDFs at the grid's edges is a lower bound L of the exact statistic, and
L plus the largest share of either sample in one grid bin an upper bound U. The grid value L is reported;
when the drift decision depends on the KS floor and the floor lies in [L, U], the exact statistic is
computed (:func:`aggregates.ks_statistic`) and decides, so decisions are those of the exact statistic.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg2.extensions
from psycopg2 import sql

from nightly_ml import db
from nightly_ml.monitoring.aggregates import CategoryCounts, Windows, feature_samples, ks_statistic
from nightly_ml.monitoring.drift import FeatureDrift, categorical_feature_drift, numeric_feature_drift
from nightly_ml.monitoring.plan import CalibrationPlan, IntervalMoments, monitored_features
from nightly_ml.monitoring.statistics import MIN_KS_STATISTIC, SampleStats, quantile_levels, reference_bin_edges
from nightly_ml.spec import Column, DatasetSpec

FINE_BINS = 1000
MAX_SETS = 30  # GROUPING() takes at most 31 arguments: one query per 30 features


@dataclass(frozen=True)
class FeatureReference:
    """The reference side of one feature's drift statistics."""

    kind: str  # "numeric" or "categorical"
    stats: SampleStats
    edges: tuple[float, ...] = ()
    fine_edges: tuple[float, ...] = ()
    interval_counts: Any = None  # numeric: K x bins matrix; categorical: per-interval category counts
    fine_counts: tuple[int, ...] = ()
    moments: IntervalMoments | None = None

    def to_json(self) -> str:
        body: dict[str, Any] = {"kind": self.kind, "stats": [self.stats.rows, self.stats.non_null]}
        body["moments_stats"] = [_num(self.stats.mean), _num(self.stats.sd)]
        if self.kind == "numeric":
            body |= {
                "edges": list(self.edges),
                "fine_edges": list(self.fine_edges),
                "interval_counts": np.asarray(self.interval_counts).tolist(),
                "fine_counts": list(self.fine_counts),
                "moments": [
                    list(self.moments.sizes),
                    [_num(m) for m in self.moments.means],
                    [_num(v) for v in self.moments.variances],
                ],
            }
        else:
            body["interval_counts"] = [list(c.items()) for c in self.interval_counts]
        return json.dumps(body)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> FeatureReference:
        mean, sd = (_float(v) for v in body["moments_stats"])
        stats = SampleStats(rows=body["stats"][0], non_null=body["stats"][1], mean=mean, sd=sd)
        if body["kind"] != "numeric":
            counts = [{k: int(n) for k, n in pairs} for pairs in body["interval_counts"]]
            return cls("categorical", stats, interval_counts=counts)
        edges = tuple(float(e) for e in body["edges"])
        sizes, means, variances = body["moments"]
        return cls(
            "numeric",
            stats,
            edges=edges,
            fine_edges=tuple(float(e) for e in body["fine_edges"]),
            interval_counts=np.array(body["interval_counts"], dtype=np.int64).reshape(-1, len(edges) + 1),
            fine_counts=tuple(int(n) for n in body["fine_counts"]),
            moments=IntervalMoments(tuple(sizes), tuple(_float(m) for m in means), tuple(_float(v) for v in variances)),
        )


@dataclass(frozen=True)
class ReferenceProfile:
    """Every monitored feature's reference side, for one reference window of ``reference_rows`` rows."""

    reference_rows: int
    bins: int
    features: dict[str, FeatureReference]
    cached: bool = False  # read from ops.reference_profile (False: computed by this pass)


def _num(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


def _window(windows: Windows, reference: bool) -> dict[str, Any]:
    if reference:
        return {"start": windows.reference_start, "end": windows.reference_end}
    return {"start": windows.pool_start or windows.current_start, "end": windows.current_end}


def _value(column: Column) -> sql.Composed:
    return sql.SQL("CAST({} AS {})").format(
        sql.Identifier(column.name), sql.SQL("float8" if column.is_numeric else "text")
    )


def _run(
    conn: psycopg2.extensions.connection, name: str, spec: DatasetSpec, params: Mapping[str, Any], **parts: Any
) -> list:
    statement = db.compose(name, table=db.warehouse_table(spec), event_time=spec.event_time, **parts)
    with conn.cursor() as cur:
        cur.execute(statement, params)
        return cur.fetchall()


def sample_stats(
    conn: psycopg2.extensions.connection, spec: DatasetSpec, windows: Windows, *, reference: bool
) -> dict[str, SampleStats]:
    """Rows, non-null rows, mean and sd of every monitored feature in one window (categories: rows only)."""
    numeric = [f for f in monitored_features(spec) if f.is_numeric]
    aggregates = [sql.SQL("count(*)")]
    for column in numeric:
        value = _value(column)
        aggregates += [sql.SQL("{}({})").format(sql.SQL(a), value) for a in ("count", "avg", "stddev_samp")]
    (row,) = _run(
        conn,
        "monitoring_window_aggregates.sql",
        spec,
        _window(windows, reference),
        aggregates=sql.SQL(", ").join(aggregates),
    )
    stats = {}
    for i, column in enumerate(numeric):
        n, mean, sd = row[1 + 3 * i : 4 + 3 * i]
        stats[column.name] = SampleStats(int(row[0]), int(n), _float(mean), _float(sd))
    return stats


def grouped_counts(
    conn: psycopg2.extensions.connection,
    spec: DatasetSpec,
    windows: Windows,
    fine_edges: Mapping[str, Sequence[float]],
    *,
    reference: bool,
) -> dict[str, dict[tuple[Any, Any], int]]:
    """Per feature: counts by (interval or None, fine bin or category) of one window, one scan per 30 features."""
    found: dict[str, dict[tuple[Any, Any], int]] = {}
    features = monitored_features(spec)
    for first in range(0, len(features), MAX_SETS):
        part = features[first : first + MAX_SETS]
        keys = [sql.Identifier(f"k{i}") for i in range(len(part))]
        params: dict[str, Any] = dict(_window(windows, reference))
        expressions = []
        for i, column in enumerate(part):
            if column.is_numeric:
                params[f"edges_{i}"] = [float(e) for e in fine_edges[column.name]]
                value = sql.SQL("width_bucket({}, CAST({} AS float8[]))").format(
                    _value(column), sql.Placeholder(f"edges_{i}")
                )
            else:
                value = _value(column)
            expressions.append(sql.SQL("{} AS {}").format(value, keys[i]))
        interval = [sql.Identifier("interval_start")] if reference else []
        sets = [sql.SQL("({})").format(sql.SQL(", ").join([*interval, key])) for key in keys]
        rows = _run(
            conn,
            "monitoring_grouped_counts.sql",
            spec,
            params,
            keys=sql.SQL(", ").join(keys),
            select_keys=sql.SQL(", ").join([sql.Identifier("interval_start") if reference else sql.SQL("NULL"), *keys]),
            expressions=sql.SQL(", ").join(expressions),
            sets=sql.SQL(", ").join(sets),
        )
        width = len(part)
        for mask, interval_start, *values in rows:
            i = next(j for j in range(width) if not mask >> (width - 1 - j) & 1)
            counts = found.setdefault(part[i].name, {})
            counts[(interval_start, values[i])] = counts.get((interval_start, values[i]), 0) + int(values[-1])
    return found


def _fine_edges(edges: tuple[float, ...], fine: Sequence[float | None] | None) -> tuple[float, ...]:
    return tuple(sorted(set(edges) | set(reference_bin_edges(fine))))


def _fine_totals(counts: Mapping[tuple[Any, Any], int], bins: int) -> np.ndarray:
    totals = np.zeros(bins, dtype=np.int64)
    for (_, b), n in counts.items():
        if b is not None:
            totals[b] += n
    return totals


def _coarse(fine_counts: np.ndarray, edges: Sequence[float], fine_edges: Sequence[float]) -> np.ndarray:
    """Counts per bin of ``edges`` (a subset of ``fine_edges``) from counts per fine bin (last axis)."""
    target = np.concatenate([[0], np.searchsorted(np.asarray(edges), np.asarray(fine_edges), side="right")])
    mapping = np.zeros((len(target), len(edges) + 1), dtype=np.int64)
    mapping[np.arange(len(target)), target] = 1
    return np.asarray(fine_counts, dtype=np.int64) @ mapping


def _per_interval(counts: Mapping[tuple[Any, Any], int], bins: int) -> np.ndarray:
    """K x bins fine counts of the intervals holding a non-null value, oldest first."""
    rows: dict[Any, np.ndarray] = {}
    for (interval, b), n in counts.items():
        if b is not None:
            rows.setdefault(interval, np.zeros(bins, dtype=np.int64))[b] += n
    return np.array([rows[t] for t in sorted(rows)], dtype=np.int64).reshape(len(rows), bins)


def compute_reference(
    conn: psycopg2.extensions.connection, spec: DatasetSpec, windows: Windows, reference_rows: int
) -> ReferenceProfile:
    """The reference profile of every monitored feature: four scans of the reference window."""
    features = monitored_features(spec)
    numeric = [f for f in features if f.is_numeric]
    coarse = quantile_levels(spec.drift.bins)
    levels = sorted(set(coarse) | set(quantile_levels(FINE_BINS)))
    params = {**_window(windows, True), "levels": levels}
    edges: dict[str, tuple[float, ...]] = {}
    fine: dict[str, tuple[float, ...]] = {}
    if numeric:
        aggregates = [
            sql.SQL("{}(CAST(%(levels)s AS float8[])) WITHIN GROUP (ORDER BY {})").format(
                sql.SQL("percentile_disc" if f.type == "integer" else "percentile_cont"), _value(f)
            )
            for f in numeric
        ]
        (row,) = _run(conn, "monitoring_window_aggregates.sql", spec, params, aggregates=sql.SQL(", ").join(aggregates))
        for column, quantiles in zip(numeric, row, strict=True):
            at = dict(zip(levels, quantiles, strict=True)) if quantiles is not None else {}
            edges[column.name] = reference_bin_edges([at[q] for q in coarse] if at else None)
            fine[column.name] = _fine_edges(edges[column.name], quantiles)
    stats = sample_stats(conn, spec, windows, reference=True)
    moments = interval_moments(conn, spec, windows, numeric)
    counts = grouped_counts(conn, spec, windows, fine, reference=True)
    profile: dict[str, FeatureReference] = {}
    for column in features:
        found = counts.get(column.name, {})
        if column.is_numeric:
            per_interval = _per_interval(found, len(fine[column.name]) + 1)
            profile[column.name] = FeatureReference(
                "numeric",
                stats[column.name],
                edges=edges[column.name],
                fine_edges=fine[column.name],
                interval_counts=_coarse(per_interval, edges[column.name], fine[column.name]),
                fine_counts=tuple(int(n) for n in per_interval.sum(axis=0)),
                moments=moments[column.name],
            )
        else:
            per: dict[Any, CategoryCounts] = {}
            for (interval, category), n in found.items():
                per.setdefault(interval, {})[category] = n
            ordered = [per[t] for t in sorted(per)]
            rows = sum(sum(c.values()) for c in ordered)
            nulls = sum(c.get(None, 0) for c in ordered)
            profile[column.name] = FeatureReference(
                "categorical", SampleStats(rows, rows - nulls), interval_counts=ordered
            )
    return ReferenceProfile(reference_rows, spec.drift.bins, profile)


def interval_moments(
    conn: psycopg2.extensions.connection, spec: DatasetSpec, windows: Windows, numeric: Sequence[Column]
) -> dict[str, IntervalMoments]:
    """Per reference interval with a non-null value: rows, mean and population variance of each numeric feature."""
    if not numeric:
        return {}
    aggregates = []
    for column in numeric:
        aggregates += [sql.SQL("{}({})").format(sql.SQL(a), _value(column)) for a in ("count", "avg", "var_pop")]
    rows = _run(
        conn, "monitoring_interval_moments.sql", spec, _window(windows, True), aggregates=sql.SQL(", ").join(aggregates)
    )
    out = {}
    for i, column in enumerate(numeric):
        kept = [(int(r[1 + 3 * i]), float(r[2 + 3 * i]), float(r[3 + 3 * i])) for r in rows if r[1 + 3 * i]]
        out[column.name] = IntervalMoments(
            tuple(m[0] for m in kept), tuple(m[1] for m in kept), tuple(m[2] for m in kept)
        )
    return out


# --------------------------------------------------------------------------- the cache


def load_reference(
    conn: psycopg2.extensions.connection, spec: DatasetSpec, windows: Windows, version: str | None, reference_rows: int
) -> ReferenceProfile | None:
    """The cached profile of ``version`` for this window, if it covers every feature and the same rows."""
    if version is None:
        return None
    params = {
        "model_name": spec.registered_model_name,
        "model_version": str(version),
        "ref_start": windows.reference_start,
        "ref_end": windows.reference_end,
    }
    with conn.cursor() as cur:
        cur.execute(db.load_sql("monitoring_reference_load.sql"), params)
        found = {feature: (rows, body) for feature, rows, body in cur.fetchall()}
    features: dict[str, FeatureReference] = {}
    for column in monitored_features(spec):
        rows, body = found.get(column.name, (None, None))
        if rows != reference_rows or body.get("bins") != spec.drift.bins or body.get("fine") != FINE_BINS:
            return None
        features[column.name] = FeatureReference.from_json(body)
    return ReferenceProfile(reference_rows, spec.drift.bins, features, cached=True)


def reference_for(
    conn: psycopg2.extensions.connection, spec: DatasetSpec, windows: Windows, version: str | None, reference_rows: int
) -> ReferenceProfile:
    """The cached reference profile of the champion version, else computed now (see :func:`store_reference`)."""
    return load_reference(conn, spec, windows, version, reference_rows) or compute_reference(
        conn, spec, windows, reference_rows
    )


def store_reference(
    spec: DatasetSpec, windows: Windows, version: str | None, profile: ReferenceProfile, url: str | None = None
) -> bool:
    """Cache a freshly computed profile for ``version`` (its own transaction); False when there is nothing to do."""
    if version is None or profile.cached:
        return False
    with db.transaction(url) as conn, conn.cursor() as cur:
        for feature, reference in profile.features.items():
            body = json.loads(reference.to_json()) | {"bins": profile.bins, "fine": FINE_BINS}
            cur.execute(
                db.load_sql("monitoring_reference_store.sql"),
                {
                    "model_name": spec.registered_model_name,
                    "model_version": str(version),
                    "feature": feature,
                    "dataset": spec.name,
                    "ref_start": windows.reference_start,
                    "ref_end": windows.reference_end,
                    "reference_rows": profile.reference_rows,
                    "profile": json.dumps(body),
                },
            )
    return True


# --------------------------------------------------------------------------- one night


def ks_bounds(reference: Sequence[int], current: Sequence[int]) -> tuple[float, float]:
    """Bounds (L, U) of the exact KS statistic from counts on the same grid (NaN if a sample is empty)."""
    ref, cur = np.asarray(reference, dtype=np.float64), np.asarray(current, dtype=np.float64)
    n_ref, n_cur = ref.sum(), cur.sum()
    if n_ref == 0 or n_cur == 0:
        return math.nan, math.nan
    gaps = np.abs(np.cumsum(ref)[:-1] / n_ref - np.cumsum(cur)[:-1] / n_cur)
    lower = float(gaps.max()) if len(gaps) else 0.0
    return lower, min(1.0, lower + float(max((ref / n_ref).max(), (cur / n_cur).max())))


def _non_null(counts: CategoryCounts) -> dict[str, int]:
    return {k: v for k, v in counts.items() if k is not None}


def _category_stats(counts: CategoryCounts) -> SampleStats:
    rows = sum(counts.values())
    return SampleStats(rows=rows, non_null=rows - counts.get(None, 0))


def feature_drifts(
    conn: psycopg2.extensions.connection,
    spec: DatasetSpec,
    windows: Windows,
    reference: ReferenceProfile,
    plan: CalibrationPlan | None = None,
) -> list[FeatureDrift]:
    """Every monitored feature's drift: two scans of the (pooled) current sample against the profile."""
    fine = {name: ref.fine_edges for name, ref in reference.features.items() if ref.kind == "numeric"}
    stats = sample_stats(conn, spec, windows, reference=False)
    counts = grouped_counts(conn, spec, windows, fine, reference=False)
    out = []
    for column in monitored_features(spec):
        ref, found = reference.features[column.name], counts.get(column.name, {})
        if not column.is_numeric:
            current: CategoryCounts = {category: n for (_, category), n in found.items()}
            ref_total: CategoryCounts = {}
            for part in ref.interval_counts:
                for category, n in part.items():
                    ref_total[category] = ref_total.get(category, 0) + n
            out.append(
                categorical_feature_drift(
                    column.name,
                    _non_null(ref_total),
                    _non_null(current),
                    spec.drift,
                    reference=_category_stats(ref_total),
                    current=_category_stats(current),
                    plan=plan,
                    interval_counts=[_non_null(c) for c in ref.interval_counts],
                )
            )
            continue
        fine_current = _fine_totals(found, len(ref.fine_edges) + 1)
        lower, upper = ks_bounds(ref.fine_counts, fine_current)
        coarse = _coarse(fine_current, ref.edges, ref.fine_edges)

        def drift(
            statistic: float, column: Column = column, ref: FeatureReference = ref, coarse: np.ndarray = coarse
        ) -> FeatureDrift:
            return numeric_feature_drift(
                column.name,
                ref.edges,
                ref.interval_counts,
                coarse,
                statistic,
                spec.drift,
                reference=ref.stats,
                current=stats[column.name],
                plan=plan,
                moments=ref.moments,
            )

        result = drift(lower)
        # The KS floor decides only for a PSI beyond the null but under psi_threshold; inside [L, U] take the exact D.
        undecided = lower < MIN_KS_STATISTIC <= upper and result.psi < spec.drift.psi_threshold
        if result.tested and result.psi > result.threshold and undecided:
            result = drift(ks_statistic(conn, feature_samples(spec, column.name, windows))[0])
        out.append(result)
    return out
