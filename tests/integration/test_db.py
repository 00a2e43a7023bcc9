"""Migrations and per-dataset tables against a real PostgreSQL."""

from __future__ import annotations

import pytest

from nightly_ml import db
from nightly_ml.spec import load_all_specs

pytestmark = pytest.mark.integration


def test_migrations_are_idempotent(warehouse_url: str) -> None:
    assert db.migrate(warehouse_url) == []
    with db.transaction(warehouse_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM ops.schema_migrations")
        assert cur.fetchone()[0] >= 1


def test_dataset_tables_are_created_typed_and_idempotently(warehouse_url: str) -> None:
    for spec in load_all_specs():
        db.ensure_dataset_tables(spec, warehouse_url)
        db.ensure_dataset_tables(spec, warehouse_url)
        with db.transaction(warehouse_url) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'warehouse' AND table_name = %s",
                (spec.name,),
            )
            columns = dict(cur.fetchall())
        for feature in spec.features:
            assert columns[feature.name] == db.column_type(feature)
        assert columns[spec.event_time] == "timestamp with time zone"
