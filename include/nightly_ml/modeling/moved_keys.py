"""Predictions of keys that moved to another interval: found in the few partitions that can hold them.

A key re-delivered by a later interval moves there, and its prediction under the earlier interval must go
when the later one is scored. Looking for such keys in every stored prediction made each night's scoring
cost a scan of all of them (1M rows scored next to 5M stored: 2.7 s became 5.3-5.8 s). Validation keeps a
key in one interval of the warehouse, so a partition scored from its interval's current load cannot hold
one: only the others are read (scoring_moved_candidates.sql says which), usually none.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg import sql

from nightly_ml import db, partitions
from nightly_ml.spec import DatasetSpec


@dataclass(frozen=True)
class MovedKeys:
    partitions_read: list[str]  # the predictions partitions looked in (schema-qualified)
    removed: int  # predictions deleted there


def clear_moved_predictions(conn: Any, spec: DatasetSpec, start: datetime, end: datetime) -> MovedKeys:
    """Delete the predictions, scored under another interval, of keys the intervals starting in ``[start,
    end)`` now hold (``conn``: psycopg 3, inside the scoring transaction)."""
    lookback = spec.validation.key_lookback_days
    params = {
        "predictions": partitions.table(db.predictions_table_name(spec)).as_string(None),
        "dataset": spec.name,
        "start": start,
        "end": end,
        "lookback_start": None if lookback is None else start - timedelta(days=lookback),
    }
    read, removed = [], 0
    for name, is_default in conn.execute(db.load_sql("scoring_moved_candidates.sql"), params).fetchall():
        partition = sql.SQL(name)  # a regclass printed by the server: already quoted
        # an empty DEFAULT partition (as every table made partitioned has) is not worth a join
        if is_default and not conn.execute(sql.SQL("SELECT EXISTS (SELECT FROM {})").format(partition)).fetchone()[0]:
            continue
        read.append(name)
        statement = partitions.compose(
            "scoring_clear_moved.sql",
            partition=partition,
            warehouse=partitions.table(spec.warehouse_table),
            key=spec.key.name,
        )
        removed += conn.execute(statement, {"start": start, "end": end}).rowcount
    return MovedKeys(read, removed)
