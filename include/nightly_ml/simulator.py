"""A seeded, vectorised simulator producing one realistic batch per interval.

Two generators back the shipped specs: ``churn`` (daily subscription snapshots, binary
label) and ``demand`` (hourly ride demand per zone, count label). Each night's batch is a
pure function of (spec, interval, rows): the RNG is seeded from the spec's seed and the
interval start, so re-runs are byte-identical while different nights differ.

Every feature draws from its own RNG stream, and the label and the faults from further
streams, so a scenario or a fault rate changes only what it is meant to change: a
``concept`` batch has exactly the stationary inputs, and a batch with faults has exactly
the clean batch's values outside the faulted cells.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pa_compute
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from nightly_ml.spec import Column, DatasetSpec, SimulatorSource

US_PER_HOUR = 3_600_000_000
US_PER_DAY = 24 * US_PER_HOUR
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Share of rows carrying the unseen category in the new_category scenario.
NEW_CATEGORY_SHARE = 0.20
# Share of rows corrupted on the bad_data night.
BAD_DATA_SHARE = 0.40
WRONG_TYPE_VALUE = "n/a"
# Plausible-looking values that a producer might start sending without telling anyone.
_UNKNOWN_CATEGORY = {"plan": "family", "region": "overseas", "zone": "lakeside"}

# Independent RNG streams; the numbers are part of the determinism contract.
_S_TIME, _S_LABEL, _S_BAD_DATA = 1, 2, 3
_S_FEATURE = 10  # + feature index within the generator
_S_FAULTS = 100  # + fault index


# --------------------------------------------------------------------------- helpers


def _as_utc(moment: datetime) -> datetime:
    """Naive datetimes are taken as UTC; aware ones are converted."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _epoch_us(moment: datetime) -> int:
    # Integer arithmetic: timestamp() floats lose microseconds far from the epoch.
    return (_as_utc(moment) - _EPOCH) // timedelta(microseconds=1)


def _source(spec: DatasetSpec) -> SimulatorSource:
    if not isinstance(spec.source, SimulatorSource):
        raise ValueError(f"dataset {spec.name!r} does not use the simulator source (kind={spec.source.kind!r})")
    return spec.source


def _rng(source: SimulatorSource, start: datetime, stream: int) -> np.random.Generator:
    # SeedSequence needs non-negative entries; the shift keeps pre-1970 starts valid.
    entropy = [source.seed % 2**63, _epoch_us(start) // 1_000_000 + 2**40, stream]
    return np.random.default_rng(entropy)


def _pick_rows(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    """Exactly round(rate * n) distinct row positions, sorted."""
    k = round(rate * n)
    if k <= 0 or n == 0:
        return np.empty(0, dtype=np.int64)
    return np.sort(rng.choice(n, size=min(k, n), replace=False))


def _sample_categories(u: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Inverse-CDF sampling per row; ``probs`` is (k,) or (n, k)."""
    cdf = np.cumsum(probs, axis=-1)
    if cdf.ndim == 1:
        return np.minimum(np.searchsorted(cdf, u * cdf[-1], side="right"), len(cdf) - 1)
    idx = (u[:, None] * cdf[:, -1:] >= cdf).sum(axis=1)
    return np.minimum(idx, cdf.shape[1] - 1)


def _str_column(values: tuple[str, ...], idx: np.ndarray) -> pd.Series:
    # Building from codes avoids materialising a million Python strings.
    return pd.Series(pd.Categorical.from_codes(idx, categories=list(values))).astype("str")


def scenario_intensity(spec: DatasetSpec, start: datetime) -> float:
    """How strongly the spec's scenario acts on the night starting at ``start`` (0..1).

    0 before ``drift_start``; 1 from it on for sudden scenarios; a linear ramp from 0 at
    ``drift_start`` to 1 at ``drift_start + drift_ramp_days`` for ``gradual_covariate``;
    1 on the ``drift_start`` night only for ``bad_data``.
    """
    source = _source(spec)
    if source.scenario == "stationary" or source.drift_start is None:
        return 0.0
    moment = _as_utc(start)
    if moment.date() < source.drift_start:
        return 0.0
    if source.scenario == "bad_data":
        return 1.0 if moment.date() == source.drift_start else 0.0
    if source.scenario == "gradual_covariate":
        begin = datetime.combine(source.drift_start, datetime.min.time(), tzinfo=UTC)
        elapsed_days = (moment - begin) / timedelta(days=1)
        return float(min(1.0, max(0.0, elapsed_days / source.drift_ramp_days)))
    return 1.0


@dataclass(frozen=True)
class _Effects:
    """Scenario intensities split by kind of change."""

    covariate: float = 0.0
    concept: float = 0.0
    new_category: float = 0.0
    bad_data: bool = False


def _effects(spec: DatasetSpec, start: datetime) -> _Effects:
    scenario = _source(spec).scenario
    level = scenario_intensity(spec, start)
    if scenario in ("sudden_covariate", "gradual_covariate"):
        return _Effects(covariate=level)
    if scenario == "concept":
        return _Effects(concept=level)
    if scenario == "new_category":
        return _Effects(new_category=level)
    if scenario == "bad_data":
        return _Effects(bad_data=level > 0)
    return _Effects()


@dataclass
class _Draw:
    """What a generator returns: feature columns (by the generator's names) and the label."""

    features: dict[str, np.ndarray | pd.Series]
    label: np.ndarray


# --------------------------------------------------------------------------- churn

CHURN_PLANS = ("basic", "standard", "premium")
CHURN_REGIONS = ("north", "south", "east", "west")
CHURN_NEW_REGION = "central"
_CHURN_PLAN_MIX = np.array([0.45, 0.35, 0.20])
# The covariate shift: a price rise pushes customers to the cheapest plan.
_CHURN_PLAN_MIX_SHIFTED = np.array([0.75, 0.17, 0.08])
_CHURN_PLAN_PRICE = np.array([30.0, 60.0, 95.0])
_CHURN_PLAN_USAGE = np.array([0.8, 1.0, 1.3])
_CHURN_PLAN_CALLS = np.array([1.3, 1.0, 0.7])
_CHURN_REGION_MIX = np.array([0.30, 0.25, 0.25, 0.20])
_CHURN_INTERCEPT = -1.55
_CHURN_REGION_EFFECT = np.array([0.0, 0.15, -0.1, 0.05, 0.3])  # north, south, east, west, central


def _churn_logit(
    tenure: np.ndarray,
    charges: np.ndarray,
    calls: np.ndarray,
    usage: np.ndarray,
    plan: np.ndarray,
    region: np.ndarray,
    autopay: np.ndarray,
    concept: float,
) -> np.ndarray:
    # Under concept drift loyalty stops protecting (tenure and autopay flip sign) and
    # support calls weigh three times as much; the inputs themselves do not move.
    tenure_w = -0.9 + 1.8 * concept
    autopay_w = -0.8 + 1.6 * concept
    calls_w = 0.4 * (1.0 + 2.0 * concept)
    plan_effect = np.array([0.25, 0.0, -0.35])[plan]
    return (
        _CHURN_INTERCEPT
        + tenure_w * (np.log1p(tenure) - 3.0)
        + 0.65 * (charges - 60.0) / 25.0
        + calls_w * (calls - 1.0)
        - 0.55 * (usage - 100.0) / 50.0
        + plan_effect
        + autopay_w * autopay
        + _CHURN_REGION_EFFECT[region]
    )


def _generate_churn(spec: DatasetSpec, start: datetime, n: int, effects: _Effects) -> _Draw:
    source = _source(spec)

    def stream(i: int) -> np.random.Generator:
        return _rng(source, start, _S_FEATURE + i)

    shift = effects.covariate
    tenure = np.minimum(np.round(stream(0).gamma(1.2, 25.0, n)), 240).astype(np.int64)

    plan_mix = (1 - shift) * _CHURN_PLAN_MIX + shift * _CHURN_PLAN_MIX_SHIFTED
    plan = _sample_categories(stream(1).random(n), plan_mix)

    charges = _CHURN_PLAN_PRICE[plan] * np.exp(stream(2).normal(0.0, 0.18, n)) * (1 + 0.35 * shift)
    charges = np.round(np.clip(charges, 0.0, 500.0), 2)

    calls_rate = _CHURN_PLAN_CALLS[plan] * (1 + shift)
    calls = np.minimum(stream(3).poisson(calls_rate), 50).astype(np.int64)

    usage = 100.0 * _CHURN_PLAN_USAGE[plan] * stream(4).gamma(2.5, 0.4, n) * (1 - 0.30 * shift)
    usage = np.round(np.clip(usage, 0.0, 744.0), 2)

    region_stream = stream(5)
    region = _sample_categories(region_stream.random(n), _CHURN_REGION_MIX)
    new_region = region_stream.random(n) < NEW_CATEGORY_SHARE * effects.new_category
    region = np.where(new_region, len(CHURN_REGIONS), region)

    # Long-standing customers are more likely to have set up autopay.
    autopay_p = 0.35 + 0.4 * (1 - np.exp(-tenure / 24.0))
    autopay = stream(6).random(n) < autopay_p

    logit = _churn_logit(tenure, charges, calls, usage, plan, region, autopay, effects.concept)
    churned = (_rng(source, start, _S_LABEL).random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)

    return _Draw(
        features={
            "tenure_months": tenure,
            "monthly_charges": charges,
            "support_calls": calls,
            "usage_hours": usage,
            "plan": _str_column(CHURN_PLANS, plan),
            "region": _str_column((*CHURN_REGIONS, CHURN_NEW_REGION), region),
            "autopay": autopay,
        },
        label=churned,
    )


# --------------------------------------------------------------------------- demand

DEMAND_ZONES = ("downtown", "airport", "suburbs", "university", "harbor")
DEMAND_NEW_ZONE = "stadium"
_DEMAND_ZONE_MIX = np.array([0.28, 0.14, 0.26, 0.16, 0.16])
_DEMAND_ZONE_BASE = np.array([60.0, 45.0, 18.0, 30.0, 25.0, 40.0])  # last: stadium


def _hour_profile(zone: np.ndarray, hour: np.ndarray) -> np.ndarray:
    """Relative demand by hour for each zone's character (commuter, flat, evening, night)."""
    h = hour.astype(np.float64)

    def bump(centre: float, width: float) -> np.ndarray:
        # Circular distance so that 23:00 and 01:00 are neighbours.
        d = np.abs(h - centre)
        d = np.minimum(d, 24 - d)
        return np.exp(-((d / width) ** 2))

    commuter = 0.15 + 1.2 * bump(8, 1.5) + 1.0 * bump(18, 2.0) + 0.35 * bump(13, 3.0)
    airport = 0.35 + 0.6 * bump(6, 2.5) + 0.6 * bump(20, 3.0)
    suburbs = 0.1 + 0.7 * bump(7, 1.5) + 1.1 * bump(19, 2.5)
    nightlife = 0.25 + 0.5 * bump(16, 3.0) + 1.2 * bump(23, 2.5)
    leisure = 0.15 + 0.9 * bump(14, 3.5) + 0.6 * bump(20, 2.0)
    profiles = np.stack([commuter, airport, suburbs, nightlife, leisure, nightlife], axis=1)
    return np.take_along_axis(profiles, zone[:, None], axis=1)[:, 0]


def _demand_rate(
    zone: np.ndarray,
    hour: np.ndarray,
    dow: np.ndarray,
    temperature: np.ndarray,
    precipitation: np.ndarray,
    holiday: np.ndarray,
    price: np.ndarray,
) -> np.ndarray:
    weekend = dow >= 5
    # Business zones empty out at weekends, leisure zones fill up.
    weekend_factor = np.array([0.6, 0.95, 1.15, 0.8, 1.5, 1.6])[zone]
    dow_factor = np.where(weekend, weekend_factor, 1.0 + 0.04 * dow)
    temp_factor = np.exp(-0.5 * ((temperature - 21.0) / 14.0) ** 2)
    rain_factor = np.exp(-0.07 * precipitation)
    holiday_factor = np.where(holiday, np.array([0.5, 1.3, 0.9, 0.6, 1.4, 1.2])[zone], 1.0)
    price_factor = price**-1.3
    return (
        _DEMAND_ZONE_BASE[zone]
        * _hour_profile(zone, hour)
        * dow_factor
        * temp_factor
        * rain_factor
        * holiday_factor
        * price_factor
    )


def _generate_demand(spec: DatasetSpec, start: datetime, n: int, effects: _Effects, event_us: np.ndarray) -> _Draw:
    source = _source(spec)

    def stream(i: int) -> np.random.Generator:
        return _rng(source, start, _S_FEATURE + i)

    shift = effects.covariate
    hour = (event_us // US_PER_HOUR) % 24
    days = event_us // US_PER_DAY
    dow = (days + 3) % 7  # 1970-01-01 was a Thursday; Monday == 0 like datetime.weekday()

    zone_stream = stream(0)
    zone = _sample_categories(zone_stream.random(n), _DEMAND_ZONE_MIX)
    new_zone = zone_stream.random(n) < NEW_CATEGORY_SHARE * effects.new_category
    zone = np.where(new_zone, len(DEMAND_ZONES), zone)

    # A daily cycle (warmest mid-afternoon) around a fixed mean. No annual season: even a mild
    # one moves spring and autumn nights out of a 21-day reference window (KS 0.1-0.2 on
    # temperature, measured by make eval-drift), and "stationary" must mean stationary; a
    # season is a drift scenario (gradual_covariate), not the baseline.
    diurnal = 4.0 * np.sin(2 * np.pi * (hour - 9.0) / 24.0)
    temperature = 13.0 + diurnal + stream(1).normal(0.0, 4.0, n) - 12.0 * shift
    temperature = np.round(np.clip(temperature, -40.0, 50.0), 2)

    rain_stream = stream(2)
    raining = rain_stream.random(n) < 0.12 + 0.5 * shift
    amount = rain_stream.gamma(0.9, 4.0, n)
    precipitation = np.round(np.clip(np.where(raining, amount, 0.0), 0.0, 200.0), 2)

    # Drawn per row, not per calendar date, so that a stationary night stays stationary.
    holiday = stream(3).random(n) < 0.03

    price = np.exp(stream(4).normal(0.12, 0.15, n)) * (1 + 0.6 * shift)
    price = np.round(np.clip(price, 0.5, 5.0), 2)

    rate = _demand_rate(zone, hour, dow, temperature, precipitation, holiday, price)
    if effects.concept > 0:
        # The city changes: zones swap roles and the day turns around (night economy).
        swapped_zone = np.array([2, 4, 0, 1, 3, 5])[zone]
        flipped_hour = (hour + 12) % 24
        drifted = _demand_rate(swapped_zone, flipped_hour, dow, temperature, precipitation, holiday, price)
        rate = np.exp((1 - effects.concept) * np.log(rate) + effects.concept * np.log(drifted))

    label_rng = _rng(source, start, _S_LABEL)
    # Gamma-Poisson (negative binomial) noise: real counts are over-dispersed.
    noisy_rate = rate * label_rng.gamma(8.0, 1 / 8.0, n)
    demand = np.minimum(label_rng.poisson(noisy_rate), 10_000).astype(np.float64)

    return _Draw(
        features={
            "hour": hour.astype(np.int64),
            "day_of_week": dow.astype(np.int64),
            "temperature_c": temperature,
            "precipitation_mm": precipitation,
            "zone": _str_column((*DEMAND_ZONES, DEMAND_NEW_ZONE), zone),
            "is_holiday": holiday,
            "price_multiplier": price,
        },
        label=demand,
    )


# --------------------------------------------------------------------------- batch


def _check_spec_fits(spec: DatasetSpec, draw: _Draw) -> None:
    missing = [f.name for f in spec.features if f.name not in draw.features]
    if missing:
        raise ValueError(
            f"the {_source(spec).generator!r} simulator cannot produce feature(s) {missing} of dataset {spec.name!r}; "
            f"it knows {sorted(draw.features)}"
        )


def _conform(column: Column, values: np.ndarray | pd.Series) -> pd.Series:
    """Coerce a generated column to the spec's type and bounds."""
    series = pd.Series(values)
    if column.type == "integer":
        array = np.asarray(series, dtype=np.int64)
        if column.min is not None or column.max is not None:
            array = np.clip(array, column.min, column.max).astype(np.int64)
        return pd.Series(array)
    if column.type == "float":
        array = np.asarray(series, dtype=np.float64)
        if column.min is not None or column.max is not None:
            array = np.clip(array, column.min, column.max)
        return pd.Series(array)
    if column.type == "boolean":
        return pd.Series(np.asarray(series, dtype=bool))
    if column.type == "category" and column.allowed is not None:
        used = set(series.unique())
        unknown = sorted(used - set(column.allowed))
        if unknown:
            raise ValueError(f"column {column.name!r}: simulator categories {unknown} are not in the spec's 'allowed'")
    return series.astype("str")


def _label_series(spec: DatasetSpec, label: np.ndarray, *, known: bool) -> pd.Series:
    kind = spec.label.type
    if kind == "float":
        values = np.clip(label.astype(np.float64), spec.label.min, spec.label.max)
        return pd.Series(values if known else np.full(len(label), np.nan))
    if kind == "boolean":
        return pd.Series(label.astype(bool)) if known else pd.Series(pd.NA, index=range(len(label)), dtype="boolean")
    return pd.Series(label.astype(np.int64)) if known else pd.Series(pd.NA, index=range(len(label)), dtype="Int64")


def _keys(spec: DatasetSpec, start: datetime, n: int) -> pd.Series:
    moment = _as_utc(start)
    if spec.key.type == "integer":
        # Minute of the interval start times 10^7, plus the row number: unique across nights.
        base = _epoch_us(moment) // 60_000_000 * 10_000_000
        return pd.Series(np.arange(n, dtype=np.int64) + base)
    prefix = f"{spec.name}-{moment:%Y%m%dT%H%M}-"
    return pd.Series([f"{prefix}{i:07d}" for i in range(n)], dtype="str")


def _clean_batch(spec: DatasetSpec, start: datetime, end: datetime, n: int) -> tuple[pd.DataFrame, _Effects]:
    """The batch before faults and bad data, with true labels."""
    source = _source(spec)
    start_us, end_us = _epoch_us(start), _epoch_us(end)
    if end_us <= start_us:
        raise ValueError(f"empty interval: start {start} is not before end {end}")
    effects = _effects(spec, start)
    event_us = np.sort(_rng(source, start, _S_TIME).integers(start_us, end_us, n, dtype=np.int64))

    if source.generator == "churn":
        draw = _generate_churn(spec, start, n, effects)
    else:
        draw = _generate_demand(spec, start, n, effects, event_us)
    _check_spec_fits(spec, draw)

    columns: dict[str, pd.Series] = {
        spec.key.name: _keys(spec, start, n),
        spec.event_time: pd.Series(event_us.astype("datetime64[us]")).dt.tz_localize("UTC"),
    }
    for column in spec.features:
        columns[column.name] = _conform(column, draw.features[column.name])
    columns[spec.label.name] = _label_series(spec, draw.label, known=True)
    return pd.DataFrame(columns), effects


def _set_missing(frame: pd.DataFrame, name: str, rows: np.ndarray) -> None:
    if len(rows) == 0:
        return
    column = frame[name]
    if column.dtype == np.int64:
        column = column.astype("Int64")
    elif column.dtype == bool:
        column = column.astype("boolean")
    column = column.copy()
    # Each dtype has its own missing marker; object columns take None.
    column.iloc[rows] = None if column.dtype == object else np.nan if column.dtype.kind == "f" else pd.NA
    frame[name] = column


def _out_of_range_value(column: Column, above: bool) -> float:
    """A whole number clearly beyond the column's max (``above``) or min, e.g. 500 -> 5001."""
    if column.max is not None and (above or column.min is None):
        return float(np.ceil(column.max + max(abs(column.max), 1.0) * 9 + 1))
    low = column.min if column.min is not None else 0.0
    return float(np.floor(low - max(abs(low), 1.0) * 9 - 1))


def _set_out_of_range(frame: pd.DataFrame, column: Column, rows: np.ndarray, rng: np.random.Generator) -> None:
    if len(rows) == 0:
        return
    above = rng.random(len(rows)) < 0.5
    values = np.where(above, _out_of_range_value(column, True), _out_of_range_value(column, False))
    series = frame[column.name].copy()
    if series.dtype.kind == "f":
        series.iloc[rows] = values
    else:
        series.iloc[rows] = values.astype(np.int64)
    frame[column.name] = series


def _spread_over(
    rng: np.random.Generator, rows: np.ndarray, columns: list[Column], apply: Callable[[Column, np.ndarray], None]
) -> None:
    """Hit each row in ``rows`` in one randomly chosen column of ``columns``."""
    if len(rows) == 0 or not columns:
        return
    choice = rng.integers(0, len(columns), len(rows))
    for i, column in enumerate(columns):
        apply(column, rows[choice == i])


def _ranged(spec: DatasetSpec) -> list[Column]:
    return [f for f in spec.numeric_features if f.min is not None or f.max is not None]


def _move_outside(
    frame: pd.DataFrame, spec: DatasetSpec, rows: np.ndarray, start: datetime, rng: np.random.Generator
) -> None:
    """Move the rows' event_time into the day before the interval."""
    if len(rows) == 0:
        return
    moved_us = _epoch_us(start) - US_PER_DAY + rng.integers(0, US_PER_DAY, len(rows), dtype=np.int64)
    times = frame[spec.event_time].copy()
    times.iloc[rows] = pd.Series(moved_us.astype("datetime64[us]")).dt.tz_localize("UTC").to_numpy()
    frame[spec.event_time] = times
    # Calendar features follow the (wrong) timestamp so the only fault is the interval.
    if _source(spec).generator == "demand":
        calendar = {"hour": (moved_us // US_PER_HOUR) % 24, "day_of_week": (moved_us // US_PER_DAY + 3) % 7}
        for name, values in calendar.items():
            if name in frame:
                column = frame[name].copy()
                column.iloc[rows] = values
                frame[name] = column


def _apply_faults(frame: pd.DataFrame, spec: DatasetSpec, start: datetime) -> None:
    faults = _source(spec).faults
    n = len(frame)
    # One stream per fault, so changing one fault's rate never moves another fault's rows.
    rngs = [_rng(_source(spec), start, _S_FAULTS + i) for i in range(6)]
    outside = _pick_rows(rngs[0], n, faults.outside_interval)
    out_of_range = _pick_rows(rngs[1], n, faults.out_of_range)
    unknown = _pick_rows(rngs[2], n, faults.unknown_category)
    wrong_type = _pick_rows(rngs[3], n, faults.wrong_type)
    nulls = _pick_rows(rngs[4], n, faults.nulls)
    duplicates = _pick_rows(rngs[5], n, faults.duplicate_keys)

    _move_outside(frame, spec, outside, start, rngs[0])
    _spread_over(rngs[1], out_of_range, _ranged(spec), lambda c, r: _set_out_of_range(frame, c, r, rngs[1]))

    def set_unknown(column: Column, rows: np.ndarray) -> None:
        if len(rows):
            value = _UNKNOWN_CATEGORY.get(column.name, f"unknown_{column.name}")
            series = frame[column.name].copy()
            series.iloc[rows] = value
            frame[column.name] = series

    categories = [f for f in spec.features if f.type == "category"]
    _spread_over(rngs[2], unknown, categories, set_unknown)

    def set_wrong_type(column: Column, rows: np.ndarray) -> None:
        if len(rows):
            series = frame[column.name].astype(object)
            series.iloc[rows] = WRONG_TYPE_VALUE
            frame[column.name] = series

    _spread_over(rngs[3], wrong_type, spec.numeric_features, set_wrong_type)
    _spread_over(rngs[4], nulls, list(spec.features), lambda c, r: _set_missing(frame, c.name, r))

    if len(duplicates):
        keys = frame[spec.key.name].to_numpy(copy=True)
        others = np.setdiff1d(np.arange(n), duplicates, assume_unique=True)
        pool = others if len(others) else np.arange(n)
        keys[duplicates] = keys[rngs[5].choice(pool, size=len(duplicates))]
        frame[spec.key.name] = pd.Series(keys, dtype=frame[spec.key.name].dtype)


def _apply_bad_data(frame: pd.DataFrame, spec: DatasetSpec, start: datetime) -> None:
    """Corrupt BAD_DATA_SHARE of rows: a null in a required feature and an out-of-range value."""
    rng = _rng(_source(spec), start, _S_BAD_DATA)
    rows = _pick_rows(rng, len(frame), BAD_DATA_SHARE)
    ranged = _ranged(spec)
    _spread_over(rng, rows, ranged, lambda c, r: _set_out_of_range(frame, c, r, rng))
    required = [f for f in spec.features if not f.nullable] or list(spec.features)
    # Nulls go to columns without ranges where possible so both defects stay visible.
    unranged = [f for f in required if f not in ranged] or required
    _spread_over(rng, rows, unranged, lambda c, r: _set_missing(frame, c.name, r))


def _batch_with_labels(spec: DatasetSpec, start: datetime, end: datetime, rows: int | None) -> pd.DataFrame:
    n = _source(spec).rows_per_interval if rows is None else int(rows)
    if n < 0:
        raise ValueError(f"rows must not be negative, got {n}")
    frame, effects = _clean_batch(spec, start, end, n)
    if effects.bad_data:
        _apply_bad_data(frame, spec, start)
    _apply_faults(frame, spec, start)
    return frame[spec.input_columns]


def generate_batch(spec: DatasetSpec, start: datetime, end: datetime, *, rows: int | None = None) -> pd.DataFrame:
    """One interval's batch [start, end) with columns ``spec.input_columns``.

    With ``label_delay_days > 0`` the label column is all missing: labels arrive later via
    :func:`generate_labels`.
    """
    frame = _batch_with_labels(spec, start, end, rows)
    if _source(spec).label_delay_days > 0:
        frame[spec.label.name] = _label_series(spec, np.zeros(len(frame)), known=False)
    return frame


def generate_labels(spec: DatasetSpec, start: datetime, end: datetime, *, rows: int | None = None) -> pd.DataFrame:
    """Labels arriving during [start, end): the true labels of the batch ``label_delay_days`` earlier.

    Columns are ``[spec.key.name, spec.label.name]``; empty when labels are not delayed.
    Labels are keyed by the true row keys (the label system is not affected by the
    snapshot's data faults), so duplicate-key faults never duplicate a label.
    """
    delay = _source(spec).label_delay_days
    key, label = spec.key.name, spec.label.name
    if delay == 0:
        empty = _clean_batch(spec, start, end, 0)[0]
        return empty[[key, label]]
    shift = timedelta(days=delay)
    n = _source(spec).rows_per_interval if rows is None else int(rows)
    frame, _ = _clean_batch(spec, start - shift, end - shift, n)
    return frame[[key, label]].reset_index(drop=True)


# --------------------------------------------------------------------------- files


def _format_plain(value: object) -> str | None:
    """Text for one cell of an object column (mixed types after faults)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)):
        if np.isnan(value):
            return None
        return np.format_float_positional(value, trim="-")
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return str(value)


def _object_as_text(series: pd.Series) -> pa.Array:
    """An object column (numbers mixed with "n/a" after wrong_type faults) as text.

    Numbers go through Arrow's cast, which formats like the CSV writer; a per-cell Python
    loop would take seconds on a million rows.
    """
    values = series.to_numpy(dtype=object)
    is_text = np.fromiter((isinstance(v, str) for v in values), dtype=bool, count=len(values))
    rest = series.where(~is_text)
    if rest.map(type).isin([int, float, np.int64, np.float64, type(None), type(pd.NA)]).all():
        numbers = pa.array(pd.to_numeric(rest, errors="coerce"), from_pandas=True)
        text = pa.array(np.where(is_text, values, None), type=pa.string())
        return pa_compute.if_else(pa.array(is_text), text, pa_compute.cast(numbers, pa.string()))
    return pa.array([_format_plain(v) for v in values], type=pa.string())


def _iso_timestamps(series: pd.Series) -> pa.Array:
    utc = series.dt.tz_convert("UTC") if series.dt.tz is not None else series
    raw = utc.to_numpy(dtype="datetime64[us]")
    text = np.datetime_as_string(raw, unit="us")
    missing = pd.isna(series).to_numpy()
    arrow = pa.array(text, type=pa.string(), mask=missing if missing.any() else None)
    offset = "+00:00" if series.dt.tz is not None else ""
    return pa_compute.binary_join_element_wise(arrow, pa.scalar(offset), "")


def _csv_table(frame: pd.DataFrame) -> pa.Table:
    arrays: dict[str, pa.Array] = {}
    for name in frame.columns:
        series = frame[name]
        if isinstance(series.dtype, pd.DatetimeTZDtype) or series.dtype.kind == "M":
            arrays[name] = _iso_timestamps(series)
        elif series.dtype == object:
            arrays[name] = _object_as_text(series)
        else:
            arrays[name] = pa.array(series, from_pandas=True)
    return pa.table(arrays)


def _inject_malformed(body: bytes, rate: float, seed: int) -> bytes:
    lines = body.split(b"\n")
    trailing = lines[-1] == b""
    data = lines[:-1] if trailing else lines
    rows = _pick_rows(np.random.default_rng(seed), len(data), rate)
    for i in rows:
        data[i] += b",extra,fields"
    return b"\n".join(data) + (b"\n" if trailing else b"")


def _write_csv(frame: pd.DataFrame, handle: io.BufferedWriter, malformed_line_rate: float, seed: int) -> None:
    table = _csv_table(frame)
    buffer = io.BytesIO()
    try:
        # Unquoted output is the common case; fall back to quoting if a value needs it.
        pa_csv.write_csv(table, buffer, pa_csv.WriteOptions(include_header=False, quoting_style="none"))
    except pa.ArrowInvalid:
        buffer = io.BytesIO()
        pa_csv.write_csv(table, buffer, pa_csv.WriteOptions(include_header=False, quoting_style="needed"))
    body = buffer.getvalue()
    if malformed_line_rate > 0:
        body = _inject_malformed(body, malformed_line_rate, seed)
    handle.write((",".join(frame.columns) + "\n").encode("utf-8"))
    handle.write(body)


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    # Columns mixing numbers and "n/a" (wrong_type faults) have no Parquet type: store text.
    mixed = [name for name in frame.columns if frame[name].dtype == object]
    if mixed:
        frame = frame.copy()
        for name in mixed:
            frame[name] = _object_as_text(frame[name]).to_pandas().set_axis(frame.index)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    fields = []
    for field in table.schema:
        if pa.types.is_timestamp(field.type):
            field = field.with_type(pa.timestamp("us", tz="UTC" if field.type.tz else None))
        elif pa.types.is_large_string(field.type):
            # pandas' str dtype maps to large_string; plain string is what most readers expect.
            field = field.with_type(pa.string())
        fields.append(field)
    pq.write_table(table.cast(pa.schema(fields, metadata=table.schema.metadata)), path)


def write_batch(
    frame: pd.DataFrame,
    path: Path,
    *,
    fmt: Literal["csv", "parquet"] = "csv",
    malformed_line_rate: float = 0.0,
    seed: int = 0,
) -> Path:
    """Write a batch to ``path`` atomically (a reader never sees half a file).

    CSV: UTF-8, header, ISO-8601 timestamps with offset, true/false, empty for missing.
    ``malformed_line_rate`` of the data lines get extra fields appended (CSV only).
    Parquet: timestamps as ``timestamp[us, tz=UTC]``.
    """
    if not 0.0 <= malformed_line_rate <= 1.0:
        raise ValueError(f"malformed_line_rate must be in [0, 1], got {malformed_line_rate}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        if fmt == "csv":
            with partial.open("wb") as handle:
                _write_csv(frame, handle, malformed_line_rate, seed)
        elif fmt == "parquet":
            _write_parquet(frame, partial)
        else:
            raise ValueError(f"unknown format {fmt!r}; use 'csv' or 'parquet'")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


__all__ = [
    "CHURN_NEW_REGION",
    "DEMAND_NEW_ZONE",
    "generate_batch",
    "generate_labels",
    "scenario_intensity",
    "write_batch",
]
