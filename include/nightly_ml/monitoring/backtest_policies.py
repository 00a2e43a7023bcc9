"""The policies a backtest compares the pipeline with, computed offline from the warehouse (no MLflow).

- **Naive seasonal baseline**: the mean label of the row's weekday x hour cell over the trailing training
  window, from labels known at the interval's start. It is computed in PostgreSQL together with the rows
  of the interval (``backtest_interval_rows.sql``), so it costs one query per interval and no Python state.
- **Fixed cadence**: retrain every N local days with the project's own ``training.run_training``, always
  deploy, no drift trigger. The first model comes as soon as the training window holds enough labelled
  rows (the same ``training.min_rows`` rule the pipeline's bootstrap obeys). Every retrain reads its window
  as it was known at the retrain moment: labels that arrived later are left out.

Both answer the question a user asks of the pipeline's policy: does the drift-triggered, gated retraining
earn its complexity against "retrain weekly" and against "no model at all"?
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import psycopg2.extensions
from psycopg2 import sql

from nightly_ml import db
from nightly_ml.modeling import evaluation, frames, training
from nightly_ml.spec import DatasetSpec

log = logging.getLogger(__name__)

FETCH_ROWS = 20_000
POLICIES = ("pipeline", "baseline", "fixed_cadence")
POLICY_TITLES = {"pipeline": "pipeline policy", "baseline": "naive seasonal", "fixed_cadence": "fixed cadence"}


# --------------------------------------------------------------------------- pure helpers


def local_day(spec: DatasetSpec, moment: datetime) -> date:
    """The calendar day of ``moment`` in the spec's zone (cadences count local days, so DST moves nothing)."""
    return moment.astimezone(spec.zone).date()


def retrain_due(spec: DatasetSpec, last_attempt: datetime | None, moment: datetime, cadence_days: int) -> bool:
    """Whether the fixed-cadence policy retrains at ``moment``: never tried yet, or ``cadence_days`` local days on."""
    if cadence_days < 1:
        raise ValueError(f"fixed_cadence_days must be at least 1, got {cadence_days}")
    if last_attempt is None:
        return True
    return (local_day(spec, moment) - local_day(spec, last_attempt)).days >= cadence_days


def label_cast(spec: DatasetSpec) -> sql.SQL:
    """How a label becomes a number in SQL: booleans through integer (true = 1), the rest directly."""
    return sql.SQL("integer" if spec.label.type == "boolean" else "float8")


# --------------------------------------------------------------------------- the rows of one interval


Connection = psycopg2.extensions.connection


def interval_rows(spec: DatasetSpec, start: datetime, conn: Connection) -> pd.DataFrame:
    """The interval's labelled, pipeline-scored rows: features, ``_label``, ``_pipeline`` and ``_baseline``.

    One interval at a time keeps memory at the size of one batch, as the nightly scoring does.
    """
    columns = frames.frame_columns(spec)[:-1]  # key, event time, features (the label comes as _label)
    window_start = start - timedelta(days=spec.training.window_days)
    statement = db.compose(
        "backtest_interval_rows.sql",
        columns=sql.SQL(", ").join(sql.Identifier("w", c) for c in columns),
        warehouse=db.warehouse_table(spec),
        predictions=db.predictions_table(spec),
        key=spec.key.name,
        event_time=spec.event_time,
        label=spec.label.name,
        label_cast=label_cast(spec),
    )
    params = {"interval_start": start, "as_of": start, "window_start": window_start, "zone": spec.timezone}
    names = [*columns, "_label", "_pipeline", "_baseline"]
    with conn.cursor() as cur:
        cur.execute(statement, params)
        frame = pd.DataFrame.from_records(cur.fetchall(), columns=names)
    for name in ("_label", "_pipeline", "_baseline"):
        frame[name] = pd.to_numeric(frame[name].astype(object), errors="coerce").astype("float64")
    return frame


# --------------------------------------------------------------------------- fixed cadence


def _window_query(spec: DatasetSpec, name: str, **identifiers: Any) -> sql.Composed:
    return db.compose(
        name,
        warehouse=db.warehouse_table(spec),
        event_time=spec.event_time,
        label=spec.label.name,
        **identifiers,
    )


def known_labelled_rows(spec: DatasetSpec, window_end: datetime, conn: Connection) -> int:
    """Labelled rows of the training window ending at ``window_end`` whose labels were known by then."""
    window_start, _ = frames.training_window(spec, window_end)
    with conn.cursor() as cur:
        cur.execute(
            _window_query(spec, "backtest_known_labels.sql"), {"window_start": window_start, "window_end": window_end}
        )
        return int(cur.fetchone()[0])


def known_training_frame(spec: DatasetSpec, window_end: datetime, conn: Connection) -> pd.DataFrame:
    """:func:`frames.load_training_frame` as it would have read on the night of ``window_end`` (point-in-time)."""
    window_start, _ = frames.training_window(spec, window_end)
    columns = frames.frame_columns(spec)
    statement = _window_query(
        spec,
        "backtest_training_frame.sql",
        columns=sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        key=spec.key.name,
    )
    blocks: list[pd.DataFrame] = []
    with conn.cursor(name=f"backtest_{spec.name}") as cur:
        cur.itersize = FETCH_ROWS
        cur.execute(statement, {"window_start": window_start, "window_end": window_end})
        while rows := cur.fetchmany(FETCH_ROWS):
            blocks.append(pd.DataFrame.from_records(rows, columns=columns))
    frame = (
        pd.concat(blocks, ignore_index=True) if blocks else pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    )
    return frames.coerce_frame(spec, frame)


@dataclass(frozen=True)
class FixedRetrain:
    """One retrain of the fixed-cadence policy: when, on how many rows, and whether a model was deployed."""

    at: datetime
    version: str | None
    rows: int
    candidate: str | None
    deployed: bool
    reason: str


class FixedCadence:
    """The fixed-cadence policy, stepped interval by interval in time order.

    Call :meth:`advance` with each interval's start before :meth:`predict` for its rows: a model
    trained at ``moment`` saw only what was known at ``moment`` and scores the intervals from there on.
    """

    def __init__(self, spec: DatasetSpec, cadence_days: int, conn: Connection) -> None:
        if cadence_days < 1:
            raise ValueError(f"fixed_cadence_days must be at least 1, got {cadence_days}")
        self.spec = spec
        self.cadence_days = cadence_days
        self.conn = conn
        self.model: Any = None
        self.version: str | None = None
        self.retrains: list[FixedRetrain] = []
        self._last_attempt: datetime | None = None

    def advance(self, moment: datetime) -> FixedRetrain | None:
        """Retrain at ``moment`` if the cadence says so; returns the attempt (None: not due, or waiting for rows)."""
        last = self._last_attempt if self.model is not None else None
        if not retrain_due(self.spec, last, moment, self.cadence_days):
            return None
        known = known_labelled_rows(self.spec, moment, self.conn)
        if self.model is None and known < self.spec.training.min_rows:
            return None  # bootstrap: wait until the window holds enough labelled rows, as the pipeline does
        self._last_attempt = moment
        attempt = self._train(moment, known)
        if attempt is None:
            return None
        self.retrains.append(attempt)
        return attempt

    def _train(self, moment: datetime, known: int) -> FixedRetrain | None:
        try:
            result = training.run_training(self.spec, known_training_frame(self.spec, moment, self.conn), moment)
        except frames.TrainingDataError as error:
            if self.model is None:
                return None  # e.g. a holdout without labels yet: the first model comes a night later
            log.info("%s: fixed-cadence retrain at %s kept the old model: %s", self.spec.name, moment, error)
            return FixedRetrain(moment, None, known, None, deployed=False, reason=str(error))
        self.model = result.best.model
        self.version = f"fixed-{sum(r.deployed for r in self.retrains) + 1}"
        reason = f"{len(result.train)} training rows, holdout {self.spec.promotion.primary_metric}"
        reason += f" {result.metrics.get(self.spec.promotion.primary_metric, float('nan')):.4g}"
        return FixedRetrain(moment, self.version, known, result.best.name, deployed=True, reason=reason)

    def predict(self, rows: pd.DataFrame) -> np.ndarray | None:
        """Scores of the current model for ``rows`` (None before the first model)."""
        if self.model is None:
            return None
        if rows.empty:
            return np.zeros(0)
        return evaluation.predict_scores(self.spec, self.model, frames.feature_frame(self.spec, rows))
