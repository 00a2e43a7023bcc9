"""Helpers for the integration tests (the MLflow server fixture lives in tests/conftest.py)."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import pytest
from psycopg2 import sql

from nightly_ml import db
from nightly_ml.devtools.scratch import free_port
from nightly_ml.etl.simulator import generate_batch, generate_labels
from nightly_ml.spec import DatasetSpec, load_spec

# --------------------------------------------------------------------------- shared helpers


def make_spec(name: str, new_name: str, **training_overrides: object) -> DatasetSpec:
    """A shipped spec under another name (own registered model and tables), with lighter training."""
    spec = load_spec(name)
    first = spec.training.candidates[0]
    # One candidate, one grid point: the tests check plumbing, not model quality.
    light = first.model_copy(update={"search": {k: v[:1] for k, v in first.search.items()}})
    rules = {"candidates": (light,), "min_rows": 100, "window_days": 10, "holdout_days": 2, **training_overrides}
    return spec.model_copy(update={"name": new_name, "training": spec.training.model_copy(update=rules)})


def labelled_batch(spec: DatasetSpec, start: datetime, end: datetime, rows: int) -> pd.DataFrame:
    """One simulated interval with its (possibly late) labels filled in."""
    batch = generate_batch(spec, start, end, rows=rows)
    delay = timedelta(days=spec.source.label_delay_days)
    if delay:
        labels = generate_labels(spec, start + delay, end + delay, rows=rows)
        batch = batch.drop(columns=[spec.label.name]).merge(labels, on=spec.key.name, how="left")
    return batch


def labelled_frame(spec: DatasetSpec, start: datetime, days: int, rows_per_day: int) -> pd.DataFrame:
    parts = [
        labelled_batch(spec, start + timedelta(days=d), start + timedelta(days=d + 1), rows_per_day)
        for d in range(days)
    ]
    return pd.concat(parts, ignore_index=True)


def _plain(value: object) -> object:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    return value


def load_warehouse(
    spec: DatasetSpec, frame: pd.DataFrame, interval_start: datetime, interval_end: datetime, url: str
) -> None:
    """Put rows straight into the warehouse table (what the merge step would do), via COPY."""
    columns = [spec.key.name, spec.event_time, *(f.name for f in spec.features), spec.label.name]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    integral = [
        spec.key.type == "integer",
        False,
        *(f.type == "integer" for f in spec.features),
        spec.label.type == "integer",
    ]
    for record in frame[columns].itertuples(index=False):
        values = [_plain(v) for v in record]
        # pandas turns an integer column with a None into floats; the table wants bigint text.
        values = [int(v) if wants_int and v is not None else v for v, wants_int in zip(values, integral, strict=True)]
        row_hash = hashlib.md5(repr(values).encode(), usedforsecurity=False).hexdigest()
        writer.writerow(
            ["" if v is None else v for v in values] + [interval_start.isoformat(), interval_end.isoformat(), row_hash]
        )
    buffer.seek(0)
    copy = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(
        db.warehouse_table(spec),
        sql.SQL(", ").join(sql.Identifier(c) for c in [*columns, "_interval_start", "_interval_end", "_row_hash"]),
    )
    with db.transaction(url) as conn, conn.cursor() as cur:
        cur.copy_expert(copy.as_string(conn), buffer)


class Kit:
    """Helpers for the integration tests, handed out by the ``kit`` fixture."""

    free_port = staticmethod(free_port)
    make_spec = staticmethod(make_spec)
    labelled_batch = staticmethod(labelled_batch)
    labelled_frame = staticmethod(labelled_frame)
    load_warehouse = staticmethod(load_warehouse)


@pytest.fixture(scope="session")
def kit() -> type[Kit]:
    return Kit


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any, str], list[Any]]:
    """``recorded(module, "function")``: the list of what the function returns, call by call, from now on."""

    def record(module: Any, name: str) -> list[Any]:
        real, results = getattr(module, name), []

        def recording(*args: Any, **kwargs: Any) -> Any:
            results.append(real(*args, **kwargs))
            return results[-1]

        monkeypatch.setattr(module, name, recording)
        return results

    return record
