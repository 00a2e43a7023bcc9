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


def test_the_careful_time_parse_runs_in_a_plan_postgresql_forces_parallel(warehouse_url: str) -> None:
    """ops.try_timestamptz catches errors (a subtransaction), which a parallel plan forbids: migration 0004 marks
    it PARALLEL UNSAFE, so a query calling it is planned serial even when parallel plans are forced."""
    with db.transaction(warehouse_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT proparallel FROM pg_proc WHERE oid = 'ops.try_timestamptz(text)'::regprocedure")
        assert cur.fetchone()[0] == "u"
        cur.execute("SELECT current_setting('server_version_num')::int >= 160000")
        forcing = "debug_parallel_query" if cur.fetchone()[0] else "force_parallel_mode"
        cur.execute(f"SET LOCAL {forcing} = on")
        cur.execute(
            "SELECT count(ops.try_timestamptz(v)) FROM "
            "(VALUES ('2024-02-30 10:00'), ('2024-02-29 24:00'), ('2024-06-05T10:00:00Z')) AS t(v)"
        )
        assert cur.fetchone()[0] == 2  # 30 February is no time; 24:00 is the next midnight


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


LEGACY_TABLE = """
CREATE TABLE warehouse.{name} (
    snapshot_id text PRIMARY KEY, event_time timestamptz NOT NULL, tenure_months bigint,
    monthly_charges double precision, support_calls bigint, usage_hours double precision, plan text,
    region text, churned bigint, retired_feature text,
    _interval_start timestamptz NOT NULL, _interval_end timestamptz NOT NULL,
    _label_interval_start timestamptz, _row_hash text NOT NULL
);
CREATE INDEX {name}_event_time_idx ON warehouse.{name} (event_time);
CREATE INDEX {name}_interval_idx ON warehouse.{name} (_interval_start);
CREATE TABLE warehouse.{name}_predictions (
    snapshot_id text PRIMARY KEY, event_time timestamptz NOT NULL, _interval_start timestamptz NOT NULL,
    prediction double precision NOT NULL, predicted_label bigint, model_name text NOT NULL,
    model_version text NOT NULL
);
CREATE INDEX {name}_predictions_interval_idx ON warehouse.{name}_predictions (_interval_start);
INSERT INTO warehouse.{name}_predictions VALUES ('a', '2026-01-01 10:00Z', '2026-01-01Z', 0.5, 1, 'm', '1');
INSERT INTO warehouse.{name} VALUES
    ('a', '2026-01-01 10:00Z', 1, 1.0, 0, 1.0, 'basic', 'north', 0, 'x', '2026-01-01Z', '2026-01-02Z', NULL, 'h1'),
    ('b', '2026-01-01 11:00Z', 2, 2.0, 0, 2.0, 'basic', 'north', 1, 'y', '2026-01-01Z', '2026-01-02Z', NULL, 'h2'),
    ('c', '2026-01-02 10:00Z', 3, 3.0, 0, 3.0, 'basic', 'north', NULL, NULL, '2026-01-02Z', '2026-01-03Z', NULL, 'h3');
"""


def test_a_warehouse_table_from_before_the_partitioning_becomes_its_default_partition(warehouse_url: str) -> None:
    """An existing plain table keeps every row (as the DEFAULT partition), gains the spec's new feature
    (autopay) and keeps a retired one; removing an interval then takes its rows out of DEFAULT."""
    from datetime import UTC, datetime

    from nightly_ml import partitions
    from nightly_ml.spec import load_spec

    spec = load_spec("churn").model_copy(update={"name": "churn_legacy"})
    with db.transaction(warehouse_url) as conn, conn.cursor() as cur:
        cur.execute(LEGACY_TABLE.format(name=spec.name))
    db.ensure_dataset_tables(spec, warehouse_url)
    db.ensure_dataset_tables(spec, warehouse_url)
    with db.transaction(warehouse_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT relkind FROM pg_class WHERE oid = 'warehouse.churn_legacy'::regclass")
        assert cur.fetchone()[0] == "p"
        cur.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c "
            "ON c.oid = i.inhrelid WHERE i.inhparent = 'warehouse.churn_legacy'::regclass"
        )
        assert cur.fetchall() == [("churn_legacy__default", "DEFAULT")]
        cur.execute("SELECT relkind FROM pg_class WHERE oid = 'warehouse.churn_legacy_predictions'::regclass")
        assert cur.fetchone()[0] == "p"
        cur.execute("SELECT snapshot_id, prediction FROM warehouse.churn_legacy_predictions")
        assert cur.fetchall() == [("a", 0.5)]
        cur.execute("SELECT snapshot_id, retired_feature, autopay FROM warehouse.churn_legacy ORDER BY snapshot_id")
        assert cur.fetchall() == [("a", "x", None), ("b", "y", None), ("c", None, None)]
        partitions.remove_warehouse_interval(conn, spec, datetime(2026, 1, 1, tzinfo=UTC))
        cur.execute("SELECT snapshot_id FROM warehouse.churn_legacy ORDER BY snapshot_id")
        assert cur.fetchall() == [("c",)]


def indexes_of(cur, table: str) -> list[str]:
    cur.execute(
        "SELECT indexname FROM pg_indexes WHERE schemaname = 'warehouse' AND tablename = %s ORDER BY 1", (table,)
    )
    return [name for (name,) in cur.fetchall()]


def test_predictions_have_no_key_index_and_partitions_no_interval_index(warehouse_url: str) -> None:
    """Predictions are rebuilt per interval from the warehouse partition (one per key by its primary key) and
    read by interval: a predictions table of before loses its primary key. An interval's partition holds one
    interval, so only the DEFAULT partitions keep an index on it; tables of before lose the one they had on
    every partition. A text key compares bytewise."""
    from nightly_ml.spec import load_spec

    spec = load_spec("churn").model_copy(update={"name": "churn_indexes"})
    db.ensure_dataset_tables(spec, warehouse_url)
    with db.transaction(warehouse_url) as conn, conn.cursor() as cur:
        cur.execute("ALTER TABLE warehouse.churn_indexes_predictions ADD PRIMARY KEY (snapshot_id, _interval_start)")
        cur.execute("CREATE INDEX churn_indexes_interval_idx ON warehouse.churn_indexes (_interval_start)")
        cur.execute(
            "CREATE INDEX churn_indexes_predictions_interval_idx "
            "ON warehouse.churn_indexes_predictions (_interval_start)"
        )
    db.ensure_dataset_tables(spec, warehouse_url)
    with db.transaction(warehouse_url) as conn, conn.cursor() as cur:
        assert indexes_of(cur, "churn_indexes_predictions") == []
        assert indexes_of(cur, "churn_indexes") == ["churn_indexes_event_time_idx", "churn_indexes_pkey"]
        assert indexes_of(cur, "churn_indexes_predictions__default") == [
            "churn_indexes_predictions__default_interval_idx"
        ]
        assert "churn_indexes__default_interval_idx" in indexes_of(cur, "churn_indexes__default")
        cur.execute(
            "SELECT attrelid::regclass::text, collname FROM pg_attribute JOIN pg_collation c ON c.oid = attcollation "
            "WHERE attrelid IN ('warehouse.churn_indexes'::regclass, 'warehouse.churn_indexes_predictions'::regclass) "
            "AND attname = 'snapshot_id' ORDER BY 1"
        )
        assert cur.fetchall() == [
            ("warehouse.churn_indexes", "C"),
            ("warehouse.churn_indexes_predictions", "C"),
        ]


def test_partition_names_fit_postgresql_identifiers() -> None:
    from datetime import UTC, datetime

    from nightly_ml import partitions

    start = datetime(2026, 3, 29, 1, tzinfo=UTC)
    assert partitions.partition_names("churn", start).final == "churn__20260329T010000Z"
    names = partitions.partition_names("a" * 63, start)
    assert len(names.building.encode()) <= 63 and names.final.endswith("__20260329T010000Z")
    assert partitions.partition_names("a" * 62 + "b", start).final != names.final


def test_two_writers_of_one_table_swap_partitions_in_turn_without_a_deadlock(warehouse_url: str) -> None:
    """Each writer reads the table (DEFAULT included) before attaching, which locks DEFAULT exclusively:
    without the writer lock the second writer's read and the first one's attach wait for each other."""
    import threading
    import time
    from datetime import UTC, datetime, timedelta

    from psycopg2 import sql

    from nightly_ml import partitions
    from nightly_ml.spec import load_spec

    spec = load_spec("churn").model_copy(update={"name": "churn_writers"})
    db.ensure_dataset_tables(spec, warehouse_url)
    errors: list[BaseException] = []

    def write(day: int, pause: float) -> None:
        start = datetime(2026, 2, day, tzinfo=UTC)
        names = partitions.warehouse_partition(spec, start)
        try:
            with db.transaction(warehouse_url) as conn, conn.cursor() as cur:
                partitions.lock_writer(conn, spec.warehouse_table)
                cur.execute("SELECT count(*) FROM warehouse.churn_writers")
                building = sql.Identifier("warehouse", names.building)
                cur.execute(sql.SQL("CREATE TABLE {} (LIKE warehouse.churn_writers)").format(building))
                cur.execute(
                    sql.SQL(
                        "INSERT INTO {} (snapshot_id, event_time, _interval_start, _interval_end, _row_hash) "
                        "VALUES (%s, %s, %s, %s, 'h')"
                    ).format(building),
                    (f"k{day}", start, start, start + timedelta(days=1)),
                )
                time.sleep(pause)
                partitions.swap_in(conn, start, names)
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    first = threading.Thread(target=write, args=(1, 1.5))
    second = threading.Thread(target=write, args=(2, 0.0))
    first.start()
    time.sleep(0.3)
    second.start()
    first.join(60)
    second.join(60)
    assert errors == []
    with db.transaction(warehouse_url) as conn:
        attached = partitions.partitions_in(
            conn, spec.warehouse_table, datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)
        )
    assert [name for name, _ in attached] == ["churn_writers__20260201T000000Z", "churn_writers__20260202T000000Z"]


def test_loaded_and_scored_intervals_are_listed_from_partitions_and_the_default_one(warehouse_url: str) -> None:
    """The listings monitoring pools and compares (no index on _interval_start in an interval's partition):
    intervals with a partition of their own and intervals with rows in the DEFAULT partition, newest first, up
    to the limit; an empty partition and one outside the range are not listed; scored ones by version."""
    from datetime import UTC, datetime, timedelta

    from nightly_ml import partitions
    from nightly_ml.monitoring import listings
    from nightly_ml.spec import load_spec

    spec = load_spec("churn").model_copy(update={"name": "churn_listing"})
    db.ensure_dataset_tables(spec, warehouse_url)
    d = [datetime(2026, 2, 1, tzinfo=UTC) + timedelta(days=n) for n in range(6)]
    in_default, partitioned, empty, later = d[:2], d[2:4], d[4], d[5]
    versions = {d[0]: "2", d[1]: "1", d[2]: "1", d[3]: "2", d[5]: "1"}
    with db.transaction(warehouse_url) as conn, conn.cursor() as cur:
        for parent in ("churn_listing", "churn_listing_predictions"):
            for start in [*partitioned, empty, later]:
                cur.execute(
                    f"CREATE TABLE warehouse.{partitions.partition_names(parent, start).final} "
                    f"PARTITION OF warehouse.{parent} FOR VALUES IN (%s)",
                    (start,),
                )
        for start in [*in_default, *partitioned, later]:
            for row in range(3):
                key = f"{start:%d}-{row}"
                cur.execute(
                    "INSERT INTO warehouse.churn_listing (snapshot_id, event_time, _interval_start, _interval_end, "
                    "_row_hash) VALUES (%s, %s, %s, %s, 'h')",
                    (key, start, start, start + timedelta(days=1)),
                )
                cur.execute(
                    "INSERT INTO warehouse.churn_listing_predictions (snapshot_id, event_time, _interval_start, "
                    "prediction, model_name, model_version) VALUES (%s, %s, %s, 0.5, 'm', %s)",
                    (key, start, start, versions[start]),
                )
        cur.execute("SELECT count(*) FROM warehouse.churn_listing__default")
        assert cur.fetchone()[0] == 6

        plans = record_plans(conn, "ops.interval_partitions")
        assert listings.loaded_intervals(conn, spec, d[0], empty, 10) == [d[3], d[2], d[1], d[0]]
        assert listings.loaded_intervals(conn, spec, d[0], empty, 3) == [d[3], d[2], d[1]]
        assert listings.loaded_intervals(conn, spec, d[1], d[2], 10) == [d[2], d[1]]
        assert listings.loaded_intervals(conn, spec, later + timedelta(days=1), later + timedelta(days=9), 5) == []

        assert listings.scored_intervals(conn, spec, later, None, 10) == [d[3], d[2], d[1], d[0]]
        assert listings.scored_intervals(conn, spec, later, "1", 10) == [d[2], d[1]]
        assert listings.scored_intervals(conn, spec, later, "2", 1) == [d[3]]
        assert listings.scored_intervals(conn, spec, d[3], "2", 10) == [d[0]]
        assert listings.scored_intervals(conn, spec, later + timedelta(days=1), "1", 2) == [later, d[2]]
    # Each interval partition is probed for its first row, never read whole (an EXISTS became a semi-join
    # that read every row of the table); the DEFAULT partitions are the planner's to scan.
    probes = [node for plan in plans for node in plan_nodes(plan) if "__2026" in node.get("Relation Name", "")]
    assert probes and all(node["Actual Rows"] <= 1 for node in probes), [
        (node["Relation Name"], node["Actual Rows"]) for node in probes
    ]


def record_plans(conn, marker: str) -> list[dict]:
    """The executed plans (EXPLAIN ANALYZE) of the statements ``conn``'s new cursors run that contain ``marker``."""
    import psycopg2.extensions

    plans: list[dict] = []

    class Explaining(psycopg2.extensions.cursor):
        def execute(self, query, vars=None):
            text = query if isinstance(query, str) else query.as_string(self)
            if marker in text:
                super().execute("EXPLAIN (ANALYZE, FORMAT JSON) " + text, vars)
                plans.append(self.fetchone()[0][0]["Plan"])
            return super().execute(query, vars)

    conn.cursor_factory = Explaining
    return plans


def plan_nodes(node: dict) -> list[dict]:
    return [node, *(child for sub in node.get("Plans", []) for child in plan_nodes(sub))]
