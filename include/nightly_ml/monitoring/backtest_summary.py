"""The backtest summary's data: typed, frozen, and JSON both ways (NaN as null, timestamps as ISO text).

Kept apart from the code that computes it (:mod:`nightly_ml.monitoring.backtest`) so that the report, the
JSON file and a later reader (a note, a dashboard) share one definition of what a backtest says.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields, is_dataclass
from datetime import datetime
from typing import Any

from nightly_ml.monitoring.backtest_policies import FixedRetrain

# --------------------------------------------------------------------------- the summary


@dataclass(frozen=True)
class IntervalResult:
    """One replayed interval: what the pipeline did with it and, when comparable, every policy's metric."""

    start: datetime
    end: datetime
    month: str
    status: str  # load outcome: merged, rejected, or unaudited (rows without an audit row)
    rows: int
    rows_scored: int
    champion_version: str | None
    fixed_cadence_version: str | None
    compared_rows: int
    metrics: dict[str, float | None]  # policy -> primary metric; empty when not compared
    excluded: str | None  # why the interval is not compared (None: compared)
    drift: bool | None  # monitoring flagged feature or prediction drift (None: not monitored)


@dataclass(frozen=True)
class Event:
    """Something a policy did, placed at an interval: a trigger, a gate decision, an alias move or a retrain."""

    at: datetime
    policy: str
    kind: str  # trigger, promote, reject, rollback, retrain, champion
    version: str | None
    detail: str


@dataclass(frozen=True)
class MonthResult:
    month: str
    intervals: int
    compared_intervals: int
    compared_rows: int
    metrics: dict[str, float | None]


@dataclass(frozen=True)
class PolicyCounts:
    """What a policy needed: retrains, model deployments and mails (data alerts are the same for every policy)."""

    policy: str
    retrains: int
    promotions: int
    rejections: int
    triggers: int
    alerts: int


@dataclass(frozen=True)
class DriftSummary:
    """Monitoring verdicts over the range (latest pass per interval); ``rate`` is the false-alarm check."""

    monitored: int
    drifted: int
    feature_drift: int
    prediction_drift: int
    retrain_recommended: int
    rate: float | None


@dataclass(frozen=True)
class BacktestSummary:
    dataset: str
    task: str
    metric: str
    greater_is_better: bool
    timezone: str
    start: datetime
    end: datetime
    fixed_cadence_days: int
    intervals: tuple[IntervalResult, ...]
    months: tuple[MonthResult, ...]
    overall: dict[str, float | None]
    compared_intervals: int
    compared_rows: int
    bootstrap_intervals: int
    counts: tuple[PolicyCounts, ...]
    data_alerts: dict[str, int]
    drift: DriftSummary
    events: tuple[Event, ...]
    fixed_retrains: tuple[FixedRetrain, ...]


# --------------------------------------------------------------------------- helpers


def finite_or_none(value: Any) -> float | None:
    """A float for JSON and for equality after a round trip: NaN and infinities become None."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def drift_summary(flags: Iterable[tuple[bool, bool, bool]]) -> DriftSummary:
    """Counts from ``(feature_drift, prediction_drift, should_retrain)`` per monitored interval."""
    rows = list(flags)
    drifted = sum(1 for feature, prediction, _ in rows if feature or prediction)
    return DriftSummary(
        monitored=len(rows),
        drifted=drifted,
        feature_drift=sum(1 for feature, _, _ in rows if feature),
        prediction_drift=sum(1 for _, prediction, _ in rows if prediction),
        retrain_recommended=sum(1 for *_, retrain in rows if retrain),
        rate=drifted / len(rows) if rows else None,
    )


# --------------------------------------------------------------------------- JSON


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float):
        return finite_or_none(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def summary_to_dict(summary: BacktestSummary) -> dict[str, Any]:
    """The summary as JSON-safe data: ISO timestamps, NaN and infinities as null."""
    return _plain(asdict(summary))


def _decode(kind: Any, value: Any) -> Any:
    """Rebuild a value of the annotated type ``kind`` from JSON data (the inverse of :func:`_plain`)."""
    origin, arguments = typing.get_origin(kind), typing.get_args(kind)
    if value is None:
        return None
    if origin in (typing.Union, types.UnionType):
        return _decode(next(a for a in arguments if a is not type(None)), value)
    if is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        return kind(**{f.name: _decode(hints[f.name], value[f.name]) for f in fields(kind)})
    if origin is tuple:
        return tuple(_decode(arguments[0], v) for v in value)
    if origin is dict:
        return {k: _decode(arguments[1], v) for k, v in value.items()}
    if kind is datetime:
        return datetime.fromisoformat(value)
    if kind is float:
        return float(value)
    return value


def summary_from_dict(data: Mapping[str, Any]) -> BacktestSummary:
    """A summary from :func:`summary_to_dict`'s output (e.g. the report's JSON file)."""
    return _decode(BacktestSummary, data)
