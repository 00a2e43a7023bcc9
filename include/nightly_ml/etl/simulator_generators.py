"""The simulator's worlds: seeded per (seed, interval, stream) churn and demand generators with drift scenarios."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from nightly_ml.intervals import parse_utc
from nightly_ml.spec import DatasetSpec, SimulatorSource

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


def _epoch_us(moment: datetime) -> int:
    # Integer arithmetic: timestamp() floats lose microseconds far from the epoch.
    return (parse_utc(moment) - _EPOCH) // timedelta(microseconds=1)


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
    moment = parse_utc(start)
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
