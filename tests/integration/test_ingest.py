"""Ingest against a real PostgreSQL: COPY, validation, quarantine, merge, idempotency and bad input.

Every bad-input case ends in quarantine with its rule or in a worded batch rejection; the raw
input is still there afterwards, and a rejected interval has nothing merged.
"""

from __future__ import annotations

import io
import os
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from nightly_ml import db, partitions, storage
from nightly_ml.config import settings
from nightly_ml.etl import simulator, simulator_files, sources
from nightly_ml.etl.staging import BatchRejected
from nightly_ml.spec import DatasetSpec, load_spec
from nightly_ml.tasks import ingest

pytestmark = pytest.mark.integration

PROJECT_SPECS = Path(__file__).resolve().parents[2] / "include" / "specs"
DAY0 = datetime(2026, 3, 1, tzinfo=UTC)
COLUMNS = load_spec("churn", PROJECT_SPECS).input_columns


@pytest.fixture(scope="module")
def file_specs(warehouse_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A spec dir where `churn` reads dropped files and `sim` is the churn simulator with late labels."""
    spec_dir = tmp_path_factory.mktemp("specs")
    raw = yaml.safe_load((PROJECT_SPECS / "churn.yaml").read_text())
    dropped = {**raw, "source": {"kind": "files", "path": "drop/churn"}}
    (spec_dir / "churn.yaml").write_text(yaml.safe_dump(dropped))
    simulated = {**raw, "name": "sim", "source": {**raw["source"], "rows_per_interval": 500, "label_delay_days": 2}}
    (spec_dir / "sim.yaml").write_text(yaml.safe_dump(simulated))
    os.environ["NIGHTLY_ML_SPEC_DIR"] = str(spec_dir)
    settings.cache_clear()
    yield spec_dir
    os.environ.pop("NIGHTLY_ML_SPEC_DIR", None)
    settings.cache_clear()


def day(n: int) -> tuple[datetime, datetime]:
    start = DAY0 + timedelta(days=n)
    return start, start + timedelta(days=1)


def good_rows(start: datetime, rows: int = 300) -> pd.DataFrame:
    """Clean churn rows for an interval, with unique keys per day (from the simulator)."""
    spec = load_spec("churn", PROJECT_SPECS)
    frame = simulator.generate_batch(spec, start, start + timedelta(days=1), rows=rows)
    return frame


def drop_folder(start: datetime) -> Path:
    folder = sources.landing_folder(load_spec("churn"), start)
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def run_night(dataset: str, start: datetime, end: datetime, run_id: str = "test") -> dict:
    files = ingest.extract(dataset, start, end)
    staged = ingest.stage(dataset, start, end, files, run_id)
    validated = ingest.validate(dataset, start, end, staged, run_id)
    merged = ingest.merge(dataset, start, end, staged, validated, run_id)
    ingest.finish(dataset, start, staged)
    return {"validation": validated, "merge": merged}


def query(statement: str, params: tuple = ()) -> list[tuple]:
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(statement, params)
        return cur.fetchall()


def interval_rows(dataset: str, start: datetime) -> int:
    return query(f'SELECT count(*) FROM warehouse."{dataset}" WHERE _interval_start = %s', (start,))[0][0]  # noqa: S608


def quarantine_rules(dataset: str, start: datetime) -> dict[str, int]:
    rows = query(
        "SELECT rule, count(*) FROM ops.quarantine WHERE dataset = %s AND interval_start = %s GROUP BY rule",
        (dataset, start),
    )
    return dict(rows)


def audit(dataset: str, start: datetime) -> dict:
    rows = query(
        "SELECT status, rows_in, rows_merged, rows_quarantined, checksum, reason FROM ops.load_audit "
        "WHERE dataset = %s AND interval_start = %s",
        (dataset, start),
    )
    status, rows_in, merged, quarantined, checksum, reason = rows[0]
    return {
        "status": status,
        "rows_in": rows_in,
        "merged": merged,
        "quarantined": quarantined,
        "checksum": checksum,
        "reason": reason,
    }


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    return simulator_files.write_batch(frame, path)


# --- the happy path, COPY and merge -----------------------------------------------------------


def test_clean_night_merges_every_row_and_archives_the_raw_input(file_specs: Path) -> None:
    start, end = day(0)
    folder = drop_folder(start)
    write_csv(good_rows(start), folder / "part-0.csv")
    result = run_night("churn", start, end)
    assert result["validation"]["bad_rows"] == 0
    assert interval_rows("churn", start) == 300
    assert audit("churn", start)["status"] == "merged"
    assert not folder.exists()
    assert (sources.archive_folder(load_spec("churn"), start) / "part-0.csv").exists()
    # a link a reader on another machine can open: the reports app over http, never a worker's file path
    assert result["validation"]["data_docs_url"] == (
        f"http://localhost:8080/nightly-ml/reports/data_docs/churn/ds={start:%Y-%m-%d}/index.html"
    )
    assert data_docs_pages(start) == {"churn_batch", "churn_rows"}, "one site shows both checkpoints"


def data_docs_pages(start: datetime) -> set[str]:
    """The suites whose validation results the interval's Data Docs site has a page for."""
    from nightly_ml.etl.validation import data_docs_index

    site = Path(str(data_docs_index(load_spec("churn"), start))).parent
    return {page.relative_to(site / "validations").parts[0] for page in site.glob("validations/**/*.html")}


def test_typed_values_land_as_the_spec_says(file_specs: Path) -> None:
    start, _ = day(0)
    row = query(
        'SELECT tenure_months, monthly_charges, plan, autopay, event_time FROM warehouse."churn" '
        "WHERE _interval_start = %s ORDER BY snapshot_id LIMIT 1",
        (start,),
    )[0]
    expected = good_rows(start).sort_values("snapshot_id").iloc[0]
    assert row[0] == expected["tenure_months"]
    assert row[1] == pytest.approx(expected["monthly_charges"])
    assert row[2] == expected["plan"]
    assert row[3] == bool(expected["autopay"])
    assert row[4] == expected["event_time"].to_pydatetime()


def test_integral_floats_are_integers(file_specs: Path) -> None:
    """A CSV writer turns an integer column with gaps into floats: ``12.0`` is the integer 12."""
    start, end = day(40)
    frame = good_rows(start).astype({"tenure_months": object})
    frame["tenure_months"] = [f"{v}.0" for v in frame["tenure_months"]]
    write_csv(frame, drop_folder(start) / "part-0.csv")
    result = run_night("churn", start, end)
    assert result["validation"]["bad_rows"] == 0
    (total,) = query('SELECT sum(tenure_months) FROM warehouse."churn" WHERE _interval_start = %s', (start,))[0]
    assert int(total) == int(good_rows(start)["tenure_months"].sum())


def test_several_files_and_parquet_in_one_interval(file_specs: Path) -> None:
    start, end = day(1)
    folder = drop_folder(start)
    frame = good_rows(start, 400)
    write_csv(frame.iloc[:150], folder / "part-0.csv")
    simulator_files.write_batch(frame.iloc[150:], folder / "part-1.parquet", fmt="parquet")
    run_night("churn", start, end)
    assert interval_rows("churn", start) == 400


def test_rerunning_a_night_gives_identical_rows_and_checksum(file_specs: Path) -> None:
    start, end = day(2)
    folder = drop_folder(start)
    write_csv(good_rows(start), folder / "part-0.csv")
    first = run_night("churn", start, end, "first")
    first_audit = audit("churn", start)
    second = run_night("churn", start, end, "second")  # the input comes back from the archive
    assert second["merge"]["checksum"] == first["merge"]["checksum"] == first_audit["checksum"]
    assert audit("churn", start)["checksum"] == first_audit["checksum"]
    assert interval_rows("churn", start) == 300


def test_the_merged_partition_is_attached_on_its_bound_check_without_a_scan(file_specs: Path) -> None:
    """The merge proves the new partition's bound with a CHECK in the scan that sets its NOT NULL columns, so
    attaching it reads none of its rows (PostgreSQL says so at DEBUG1); the CHECK goes once it is attached."""
    from nightly_ml.etl import warehouse
    from nightly_ml.etl.staging import StageResult

    start, end = day(44)
    write_csv(good_rows(start), drop_folder(start) / "part-0.csv")
    staged = ingest.stage("churn", start, end, ingest.extract("churn", start, end), "bound")
    ingest.validate("churn", start, end, staged, "bound")
    name = partitions.warehouse_partition(load_spec("churn"), start).final
    with db.transaction() as conn:
        with conn.cursor() as cur:
            cur.execute("SET LOCAL client_min_messages = debug1")
        merged = warehouse.merge_interval(conn, load_spec("churn"), StageResult.from_dict(staged), start, end, "bound")
        with conn.cursor() as cur:
            cur.execute(
                "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'c'",
                (f'warehouse."{name}"',),
            )
            checks = [row[0] for row in cur.fetchall()]
    notices = "".join(conn.notices)
    assert merged.rows_merged == 300
    assert f'partition constraint for table "{name}" is implied by existing constraints' in notices, notices
    assert checks == []
    assert interval_rows("churn", start) == 300


@pytest.mark.parametrize("autovacuum", [True, False], ids=["autovacuum", "no-autovacuum"])
def test_the_merge_analyzes_the_columns_the_night_reads_and_leaves_the_rest_to_autovacuum(
    file_specs: Path, monkeypatch: pytest.MonkeyPatch, autovacuum: bool
) -> None:
    """With autovacuum, the new partition has statistics for the key, the interval, the event time and the
    label at once, and its count of rows changed since an ANALYZE stays at the rows merged, so autovacuum
    analyzes the rest; without it (as on the CI machine's server), the merge analyzes every column."""
    from nightly_ml.etl import warehouse

    monkeypatch.setattr(warehouse, "autovacuum_analyzes", lambda conn: autovacuum)
    start, end = day(46 if autovacuum else 47)
    write_csv(good_rows(start), drop_folder(start) / "part-0.csv")
    run_night("churn", start, end, "analyzed")
    name = partitions.warehouse_partition(load_spec("churn"), start).final
    analyzed = {
        row[0]
        for row in query("SELECT attname FROM pg_stats WHERE schemaname = 'warehouse' AND tablename = %s", (name,))
    }
    night = {"snapshot_id", "_interval_start", "event_time", "churned", "_label_interval_start"}
    if not autovacuum:
        assert analyzed > night and "monthly_charges" in analyzed
        return
    assert analyzed == night
    # A backend reports its counts when it goes idle or ends: wait for the merge's to arrive.
    deadline = time.monotonic() + 60
    while (
        changed := query(
            "SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relid = %s::regclass", (f'warehouse."{name}"',)
        )[0][0]
    ) < 300 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert changed == 300


def test_the_nights_big_staging_tables_are_not_for_autovacuum(file_specs: Path) -> None:
    """The staged rows, their typed copy and the bad rows live for one night and are read at once: autovacuum
    (where it runs) leaves them alone instead of vacuuming a million new rows while validation works."""
    from nightly_ml.etl.staging import StageResult
    from nightly_ml.etl.typed_tables import bad_rows_table, typed_table

    start, end = day(48)
    write_csv(good_rows(start), drop_folder(start) / "part-0.csv")
    staged = ingest.stage("churn", start, end, ingest.extract("churn", start, end), "autovacuum")
    ingest.validate("churn", start, end, staged, "autovacuum")
    stage = StageResult.from_dict(staged)
    tables = [stage.rows_table, typed_table(stage), bad_rows_table(stage)]
    options = query(
        "SELECT relname, reloptions FROM pg_class WHERE relnamespace = 'staging'::regnamespace AND relname = ANY(%s)",
        (tables,),
    )
    assert sorted(options) == sorted((name, ["autovacuum_enabled=false"]) for name in tables)


def test_a_typed_table_emptied_before_the_merge_stops_it(file_specs: Path) -> None:
    """Unlogged staging tables come back empty after a crash: the merge counts the rows it took and the bad
    ones against what was staged, and merges nothing."""
    from nightly_ml.errors import StagingLost
    from nightly_ml.etl.staging import StageResult
    from nightly_ml.etl.typed_tables import typed_table

    start, end = day(45)
    write_csv(good_rows(start), drop_folder(start) / "part-0.csv")
    staged = ingest.stage("churn", start, end, ingest.extract("churn", start, end), "lost")
    validated = ingest.validate("churn", start, end, staged, "lost")
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(f'TRUNCATE staging."{typed_table(StageResult.from_dict(staged))}"')
    with pytest.raises(StagingLost, match="holds 0 rows but 300 were staged and validated; they were lost"):
        ingest.merge("churn", start, end, staged, validated, "lost")
    assert interval_rows("churn", start) == 0


def test_backfilling_a_week_twice_gives_identical_counts_and_checksums(file_specs: Path) -> None:
    nights = [day(n) for n in range(10, 17)]

    def backfill(tag: str) -> list[tuple]:
        for start, end in nights:
            run_night("sim", start, end, f"{tag}-{start:%d}")
        return query(
            "SELECT interval_start, rows_merged, rows_quarantined, labels_applied, checksum "
            "FROM ops.load_audit WHERE dataset = 'sim' ORDER BY interval_start"
        )

    first = backfill("one")
    labelled_first = query('SELECT count(*), sum(churned) FROM warehouse."sim" WHERE churned IS NOT NULL')
    second = backfill("two")
    assert first == second
    assert len(first) == 7
    assert labelled_first == query('SELECT count(*), sum(churned) FROM warehouse."sim" WHERE churned IS NOT NULL')


def test_late_labels_are_upserted_by_key_and_survive_a_rerun(file_specs: Path) -> None:
    spec = load_spec("sim")
    start, end = day(12)
    labelled_day = start - timedelta(days=spec.source.label_delay_days)
    # Its own nights (the backfill test may have run them: a night run again is the same night), so that the
    # test does not depend on the order the tests run in.
    run_night("sim", labelled_day, labelled_day + timedelta(days=1), "labelled")
    run_night("sim", start, end, "labels")
    expected = simulator.generate_labels(spec, start, end)
    got = dict(query('SELECT snapshot_id, churned FROM warehouse."sim" WHERE _interval_start = %s', (labelled_day,)))
    assert {k: int(v) for k, v in zip(expected["snapshot_id"], expected["churned"], strict=True)} == got
    # Re-running the labelled night itself must not wipe the labels that arrived later.
    run_night("sim", labelled_day, labelled_day + timedelta(days=1), "rerun")
    again = dict(query('SELECT snapshot_id, churned FROM warehouse."sim" WHERE _interval_start = %s', (labelled_day,)))
    assert again == got


def test_a_row_gone_from_the_rerun_batch_is_removed(file_specs: Path) -> None:
    start, end = day(3)
    folder = drop_folder(start)
    write_csv(good_rows(start), folder / "part-0.csv")
    run_night("churn", start, end)
    archived = sources.archive_folder(load_spec("churn"), start)
    shutil.rmtree(archived)
    folder = drop_folder(start)
    write_csv(good_rows(start).iloc[:250], folder / "part-0.csv")
    result = run_night("churn", start, end)
    assert result["merge"]["rows_deleted"] == 50
    assert interval_rows("churn", start) == 250


# --- bad input: each ends in quarantine or a worded rejection, raw input kept ----------------


@pytest.mark.parametrize(
    ("key_collation", "n"), [("C", 4), ("default", 5)], ids=["bytewise-key", "key-collated-as-tables-of-before"]
)
def test_a_retired_column_stays_empty_and_the_new_partition_matches_its_parent(
    file_specs: Path, key_collation: str, n: int
) -> None:
    """The merge builds the interval's partition with every column of the warehouse table, in its order,
    type and collation (CREATE TABLE AS): one the spec no longer has (kept, never dropped) is NULL in the new
    rows, and a key of a table made before keys compared bytewise keeps its collation."""
    start, end = day(n)
    db.ensure_dataset_tables(load_spec("churn"))
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute('ALTER TABLE warehouse."churn" ADD COLUMN retired_feature text')
        cur.execute(f'ALTER TABLE warehouse."churn" ALTER COLUMN snapshot_id TYPE text COLLATE "{key_collation}"')
    try:
        folder = drop_folder(start)
        write_csv(good_rows(start), folder / "part-0.csv")
        first = run_night("churn", start, end, "with-retired")
        assert query(
            'SELECT count(*), count(retired_feature), count(tenure_months) FROM warehouse."churn" '
            "WHERE _interval_start = %s",
            (start,),
        ) == [(300, 0, 300)]
        partition_columns = query(
            "SELECT attname, format_type(atttypid, atttypmod), attnotnull, attcollation FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (f'warehouse."churn__{start:%Y%m%dT%H%M%SZ}"',),
        )
        parent_columns = query(
            "SELECT attname, format_type(atttypid, atttypmod), attnotnull, attcollation FROM pg_attribute "
            "WHERE attrelid = 'warehouse.churn'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
        )
        assert partition_columns == parent_columns
        assert run_night("churn", start, end, "again")["merge"]["checksum"] == first["merge"]["checksum"]
    finally:
        with db.transaction() as conn, conn.cursor() as cur:
            cur.execute('ALTER TABLE warehouse."churn" DROP COLUMN retired_feature')
            cur.execute('ALTER TABLE warehouse."churn" ALTER COLUMN snapshot_id TYPE text COLLATE "C"')


Corrupt = Callable[[pd.DataFrame, datetime], pd.DataFrame]


def _set(column: str, value: object, rows: slice = slice(0, 5)) -> Corrupt:
    def corrupt(frame: pd.DataFrame, start: datetime) -> pd.DataFrame:
        frame = frame.astype({column: object})
        frame.iloc[rows, frame.columns.get_loc(column)] = value
        return frame

    return corrupt


def _duplicate_keys(frame: pd.DataFrame, start: datetime) -> pd.DataFrame:
    frame = frame.copy()
    frame.iloc[1:4, 0] = frame.iloc[0, 0]
    return frame


def _outside_interval(frame: pd.DataFrame, start: datetime) -> pd.DataFrame:
    frame = frame.copy()
    frame.iloc[:3, 1] = start - timedelta(hours=2)
    return frame


QUARANTINE_CASES = {
    "wrong type": (_set("tenure_months", "twelve"), "type:tenure_months", 5),
    "null in a required column": (_set("plan", None), "not_null:plan", 5),
    "value out of range": (_set("monthly_charges", 9999.0), "range:monthly_charges", 5),
    "unknown category": (_set("region", "atlantis"), "category:region", 5),
    "duplicate keys inside the batch": (_duplicate_keys, "duplicate_key:snapshot_id", 4),
    "rows outside the interval": (_outside_interval, "outside_interval:event_time", 3),
    "bad timestamp": (_set("event_time", "yesterday"), "type:event_time", 5),
    "a fractional integer": (_set("tenure_months", "12.5"), "type:tenure_months", 5),
}


@pytest.mark.parametrize("case", list(QUARANTINE_CASES), ids=list(QUARANTINE_CASES))
def test_row_level_faults_are_quarantined_with_their_rule(file_specs: Path, case: str) -> None:
    corrupt, rule, count = QUARANTINE_CASES[case]
    start, end = day(20 + list(QUARANTINE_CASES).index(case))
    folder = drop_folder(start)
    write_csv(corrupt(good_rows(start), start), folder / "part-0.csv")
    run_night("churn", start, end)
    rules = quarantine_rules("churn", start)
    assert rules.get(rule) == count, rules
    assert interval_rows("churn", start) == 300 - count
    row = query(
        "SELECT row_data, source_file, detail FROM ops.quarantine WHERE dataset = 'churn' "
        "AND interval_start = %s AND rule = %s LIMIT 1",
        (start, rule),
    )[0]
    assert row[0]["snapshot_id"] is not None or rule.startswith("not_null")
    assert row[1] == "part-0.csv"
    assert row[2]
    assert audit("churn", start)["quarantined"] == count


def test_a_run_that_loses_the_race_for_its_interval_leaves_the_quarantine_to_the_merged_run(
    file_specs: Path,
) -> None:
    """Two runs of one interval: run b validates (its quarantine committed) after run a merged, then finds its
    staging dropped by a's finish. b fails with ConcurrentRun and takes its quarantine rows with it: the
    interval's quarantine is the merged run's alone (as the racing-runs fault test found, once in CI)."""
    from nightly_ml.errors import ConcurrentRun

    start, end = day(90)
    folder = drop_folder(start)
    write_csv(_set("plan", None)(good_rows(start), start), folder / "part-0.csv")
    files = ingest.extract("churn", start, end)
    staged_a = ingest.stage("churn", start, end, files, "run_a")
    validated_a = ingest.validate("churn", start, end, staged_a, "run_a")
    ingest.merge("churn", start, end, staged_a, validated_a, "run_a")
    staged_b = ingest.stage("churn", start, end, files, "run_b")
    validated_b = ingest.validate("churn", start, end, staged_b, "run_b")
    ingest.finish("churn", start, staged_a)
    with pytest.raises(ConcurrentRun, match="another run of this interval"):
        ingest.merge("churn", start, end, staged_b, validated_b, "run_b")
    assert query(
        "SELECT run_id, count(*) FROM ops.quarantine WHERE dataset = 'churn' AND interval_start = %s GROUP BY 1",
        (start,),
    ) == [("run_a", 5)]
    assert audit("churn", start)["quarantined"] == 5


def test_duplicate_key_against_the_warehouse_is_quarantined(file_specs: Path) -> None:
    first, first_end = day(30)
    folder = drop_folder(first)
    earlier = good_rows(first)
    write_csv(earlier, folder / "part-0.csv")
    run_night("churn", first, first_end)
    start, end = day(31)
    folder = drop_folder(start)
    frame = good_rows(start)
    frame.iloc[:2, 0] = earlier.iloc[:2, 0].to_numpy()
    write_csv(frame, folder / "part-0.csv")
    run_night("churn", start, end)
    assert quarantine_rules("churn", start) == {"key_in_other_interval:snapshot_id": 2}
    # the earlier rows are untouched
    assert interval_rows("churn", first) == 300


def test_key_lookback_days_bounds_the_intervals_a_key_is_looked_up_in(file_specs: Path) -> None:
    """With ``validation.key_lookback_days: 2`` a key stored under the interval before yesterday's is looked
    up and quarantined; one stored three days earlier is not looked up, and its row is merged."""
    path = file_specs / "churn.yaml"
    original = path.read_text()
    raw = yaml.safe_load(original)
    path.write_text(yaml.safe_dump({**raw, "validation": {**raw["validation"], "key_lookback_days": 2}}))
    try:
        nights = {}
        for n in (80, 82):
            first, first_end = day(n)
            nights[n] = good_rows(first)
            write_csv(nights[n], drop_folder(first) / "part-0.csv")
            run_night("churn", first, first_end)
        start, end = day(83)
        frame = good_rows(start)
        frame.iloc[0, 0], frame.iloc[1, 0] = nights[80].iloc[0, 0], nights[82].iloc[0, 0]
        write_csv(frame, drop_folder(start) / "part-0.csv")
        run_night("churn", start, end)
    finally:
        path.write_text(original)
    quarantined = query(
        "SELECT row_data->>'snapshot_id', detail FROM ops.quarantine WHERE dataset = 'churn' AND interval_start = %s",
        (start,),
    )
    assert [key for key, _ in quarantined] == [nights[82].iloc[0, 0]], quarantined
    assert "at most 2 day(s) before" in quarantined[0][1]
    assert interval_rows("churn", start) == 299


def test_keys_are_looked_up_only_in_intervals_whose_key_range_meets_the_batch(
    file_specs: Path, recorded: Callable[[Any, str], list[Any]]
) -> None:
    """The simulator's keys carry their interval (``churn-<start>-<n>``), so each stored night has a key range
    of its own, which a later night's batch misses: validation reads none of those partitions. A batch that
    brings back a key of night 64 spans nights 64 to 67, so nights 64, 65 and 66 are read and the key is
    quarantined; the nights outside that span (before 64, after 67) are not read."""
    from nightly_ml.etl import key_ranges

    lookups: list[key_ranges.KeyLookup] = recorded(key_ranges, "key_lookup")
    nights = {}
    for n in (64, 65, 66):
        start, end = day(n)
        nights[n] = good_rows(start)
        write_csv(nights[n], drop_folder(start) / "part-0.csv")
        run_night("churn", start, end)
    spec = load_spec("churn")
    names = {n: f"warehouse.{partitions.warehouse_partition(spec, day(n)[0]).final}" for n in nights}
    assert lookups[-1].read == []
    assert {names[64], names[65]} <= set(lookups[-1].skipped)

    start, end = day(67)
    frame = good_rows(start)
    frame.iloc[0, 0] = nights[64].iloc[0, 0]
    write_csv(frame, drop_folder(start) / "part-0.csv")
    run_night("churn", start, end)
    assert lookups[-1].read == [names[64], names[65], names[66]]
    assert not set(names.values()) & set(lookups[-1].skipped)
    assert quarantine_rules("churn", start) == {"key_in_other_interval:snapshot_id": 1}
    assert interval_rows("churn", start) == 299


def test_a_key_merged_under_another_interval_after_validation_stops_the_merge(file_specs: Path) -> None:
    """Validation looks the batch's keys up in the partitions there are then; the merge looks them up again
    only in the partitions attached since (here: the run of another interval that merged the same keys
    meanwhile) and refuses to store a key twice."""
    from nightly_ml.errors import KeyElsewhere
    from nightly_ml.etl import warehouse
    from nightly_ml.etl.staging import StageResult

    first, first_end = day(32)
    rows = good_rows(first)
    write_csv(rows, drop_folder(first) / "part-0.csv")
    staged = ingest.stage("churn", first, first_end, ingest.extract("churn", first, first_end), "first")
    validated = ingest.validate("churn", first, first_end, staged, "first")
    assert validated["bad_rows"] == 0
    spec, stage = load_spec("churn"), StageResult.from_dict(staged)
    with db.transaction() as conn:
        assert warehouse.unseen_partitions(conn, spec, stage) == [("warehouse", "churn__default")]

    second, second_end = day(33)
    later = good_rows(second)
    later.iloc[:2, 0] = rows.iloc[:2, 0].to_numpy()
    write_csv(later, drop_folder(second) / "part-0.csv")
    run_night("churn", second, second_end, run_id="second")
    with db.transaction() as conn:
        attached = warehouse.unseen_partitions(conn, spec, stage)
    assert attached is not None and len(attached) == 2 and ("warehouse", "churn__default") in attached, attached

    with pytest.raises(KeyElsewhere, match="stored under another interval after this batch was validated") as caught:
        ingest.merge("churn", first, first_end, staged, validated, "first")
    assert str(rows.iloc[0, 0]) in str(caught.value) and str(rows.iloc[1, 0]) in str(caught.value)
    assert interval_rows("churn", first) == 0
    assert interval_rows("churn", second) == 300


def _raw_line_case(start: datetime, folder: Path, payload: bytes) -> None:
    path = write_csv(good_rows(start), folder / "part-0.csv")
    with path.open("ab") as handle:
        handle.write(payload)


@pytest.mark.parametrize(
    ("low", "high"), [(0.0, 240.0), (2.5, 7.5), (-3.5, -0.5), (-1e30, 1e30), (None, 4.0), (1.0, None)]
)
def test_an_integer_range_rule_breaks_exactly_where_the_decimal_bound_does(
    file_specs: Path, low: float | None, high: float | None
) -> None:
    """An integer column's range rule compares with bigint bounds rounded inwards (no numeric per row): it
    breaks for the same values as the comparison with the spec's decimal bounds."""
    from psycopg2 import sql

    from nightly_ml.etl.rules import _outside

    values = sql.SQL("(VALUES {}) AS t(x__value)").format(
        sql.SQL(", ").join(sql.SQL("({}::bigint)").format(sql.Literal(v)) for v in [*range(-6, 10), 239, 240, 241])
    )
    statement = sql.SQL("SELECT x__value, {}, {} FROM {} ORDER BY 1").format(
        _outside("x", low, high, integral=True), _outside("x", low, high), values
    )
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute(statement)
        rows = cur.fetchall()
    assert [(v, integral) for v, integral, _ in rows] == [(v, decimal) for v, _, decimal in rows]
    if (low, high) != (-1e30, 1e30):  # the grid has values on both sides of every other case's bounds
        assert any(broken for _, broken, _ in rows) and not all(broken for _, broken, _ in rows)


def test_malformed_csv_line_is_quarantined_with_its_line_number(file_specs: Path) -> None:
    start, end = day(40)
    folder = drop_folder(start)
    _raw_line_case(start, folder, b"broken,line,with,far,too,many,fields,a,b,c,d,e\n")
    run_night("churn", start, end)
    assert quarantine_rules("churn", start) == {"malformed_line": 1}
    line = query(
        "SELECT line_number, raw_line FROM ops.quarantine WHERE dataset = 'churn' AND interval_start = %s", (start,)
    )[0]
    assert line == (302, "broken,line,with,far,too,many,fields,a,b,c,d,e")
    assert interval_rows("churn", start) == 300


def test_bytes_that_are_not_utf8_are_quarantined(file_specs: Path) -> None:
    start, end = day(41)
    folder = drop_folder(start)
    bad = f"k-latin1,{start.isoformat()},3,10.5,1,20.0,basic,north,true,\n".encode().replace(b"k-latin1", b"k-\xe9\xff")
    _raw_line_case(start, folder, bad)
    run_night("churn", start, end)
    assert quarantine_rules("churn", start) == {"invalid_utf8": 1}
    assert interval_rows("churn", start) == 300


def _reject(start: datetime, end: datetime, match: str) -> None:
    with pytest.raises(BatchRejected, match=match):
        run_night("churn", start, end)
    assert interval_rows("churn", start) == 0
    record = audit("churn", start)
    assert record["status"] == "rejected"
    assert record["merged"] == 0
    assert sources.landing_folder(load_spec("churn"), start).is_dir(), "the raw input must be kept"
    outbox = sorted(storage.outbox_root().glob("*.eml"))
    assert outbox and "rejected" in outbox[-1].read_text()


def test_missing_column_rejects_the_batch(file_specs: Path) -> None:
    start, end = day(50)
    write_csv(good_rows(start).drop(columns=["plan"]), drop_folder(start) / "part-0.csv")
    _reject(start, end, r"schema broken: missing column\(s\) \['plan'\]")
    assert data_docs_pages(start) == {"churn_batch"}, "the rejecting checkpoint's Data Docs are there for the alert"


def test_extra_column_rejects_the_batch(file_specs: Path) -> None:
    start, end = day(51)
    write_csv(good_rows(start).assign(coupon="x"), drop_folder(start) / "part-0.csv")
    _reject(start, end, r"unexpected column\(s\) \['coupon'\]")


def test_empty_file_rejects_an_empty_batch(file_specs: Path) -> None:
    start, end = day(52)
    (drop_folder(start) / "part-0.csv").write_bytes(b"")
    _reject(start, end, "empty batch")


def test_header_only_file_rejects_an_empty_batch(file_specs: Path) -> None:
    start, end = day(53)
    (drop_folder(start) / "part-0.csv").write_text(",".join(COLUMNS) + "\n")
    _reject(start, end, "empty batch")


def test_wrong_delimiter_rejects_with_a_hint(file_specs: Path) -> None:
    start, end = day(54)
    path = drop_folder(start) / "part-0.csv"
    good_rows(start).to_csv(path, sep=";", index=False)
    _reject(start, end, "looks ';'-delimited")


def test_parquet_with_a_different_schema_rejects(file_specs: Path) -> None:
    start, end = day(55)
    frame = good_rows(start).rename(columns={"usage_hours": "usage"})
    simulator_files.write_batch(frame, drop_folder(start) / "part-0.parquet", fmt="parquet")
    _reject(start, end, r"missing column\(s\) \['usage_hours'\].*unexpected column\(s\) \['usage'\]")


def test_unreadable_file_rejects(file_specs: Path) -> None:
    start, end = day(56)
    (drop_folder(start) / "part-0.parquet").write_bytes(b"PAR1 this is not really parquet")
    _reject(start, end, "cannot read the Parquet file")


def test_too_many_bad_rows_reject_and_nothing_is_merged(file_specs: Path) -> None:
    start, end = day(57)
    write_csv(_set("plan", None, slice(0, 60))(good_rows(start), start), drop_folder(start) / "part-0.csv")
    _reject(start, end, r"too many bad rows: 60 of 300 \(20.0%\)")
    assert data_docs_pages(start) == {"churn_batch", "churn_rows"}
    assert quarantine_rules("churn", start) == {"not_null:plan": 60}
    assert audit("churn", start)["quarantined"] == 60


def test_a_rejected_rerun_leaves_the_earlier_merge_untouched(file_specs: Path) -> None:
    """Nothing is merged partially: a bad re-run of a merged interval keeps the earlier rows."""
    start, end = day(58)
    write_csv(good_rows(start), drop_folder(start) / "part-0.csv")
    run_night("churn", start, end)
    before = query(
        "SELECT md5(string_agg(_row_hash, '' ORDER BY snapshot_id)) FROM warehouse.\"churn\" "
        "WHERE _interval_start = %s",
        (start,),
    )
    shutil.rmtree(sources.archive_folder(load_spec("churn"), start))
    write_csv(good_rows(start).drop(columns=["region"]), drop_folder(start) / "part-0.csv")
    with pytest.raises(BatchRejected):
        run_night("churn", start, end)
    after = query(
        "SELECT md5(string_agg(_row_hash, '' ORDER BY snapshot_id)) FROM warehouse.\"churn\" "
        "WHERE _interval_start = %s",
        (start,),
    )
    assert before == after


def test_no_input_yet_is_a_retryable_error(file_specs: Path) -> None:
    start, end = day(59)
    with pytest.raises(sources.NoInputYet, match="no input folder"):
        ingest.extract("churn", start, end)


def test_specs_are_what_the_tests_think(file_specs: Path) -> None:
    spec: DatasetSpec = load_spec("churn")
    assert spec.source.kind == "files"
    assert spec.input_columns == COLUMNS


def test_database_source_reads_the_interval_by_its_bounds(file_specs: Path, warehouse_url: str) -> None:
    """A source table in another database, read with bound interval limits into a raw file."""
    start, end = day(70)
    frame = pd.concat([good_rows(start - timedelta(days=1), 50), good_rows(start, 120), good_rows(end, 40)])
    with db.transaction(warehouse_url) as conn, conn.cursor() as cur:
        cur.execute("CREATE SCHEMA IF NOT EXISTS source_system")
        cur.execute("DROP TABLE IF EXISTS source_system.churn_events")
        cur.execute(
            "CREATE TABLE source_system.churn_events (snapshot_id text, event_time timestamptz, tenure_months bigint, "
            "monthly_charges double precision, support_calls bigint, usage_hours double precision, plan text, "
            "region text, autopay boolean, churned bigint)"
        )
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False, header=False)
        buffer.seek(0)
        cur.copy_expert("COPY source_system.churn_events FROM STDIN WITH (FORMAT csv)", buffer)
    raw = yaml.safe_load((PROJECT_SPECS / "churn.yaml").read_text())
    raw["name"] = "churn_db"
    raw["source"] = {"kind": "database", "url_env": "TEST_SOURCE_DB_URL", "table": "source_system.churn_events"}
    (file_specs / "churn_db.yaml").write_text(yaml.safe_dump(raw))
    os.environ["TEST_SOURCE_DB_URL"] = warehouse_url
    try:
        result = run_night("churn_db", start, end)
    finally:
        os.environ.pop("TEST_SOURCE_DB_URL")
    assert result["validation"]["rows_in"] == 120
    assert interval_rows("churn_db", start) == 120
    archived = sources.archive_folder(load_spec("churn_db"), start) / "part-0.csv"
    assert archived.exists()


def test_database_source_without_its_url_says_which_variable(file_specs: Path) -> None:
    start, end = day(71)
    raw = yaml.safe_load((PROJECT_SPECS / "churn.yaml").read_text())
    raw["name"] = "churn_nourl"
    raw["source"] = {"kind": "database", "url_env": "NO_SUCH_SOURCE_URL", "table": "events"}
    (file_specs / "churn_nourl.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(RuntimeError, match="NO_SUCH_SOURCE_URL is not set"):
        ingest.extract("churn_nourl", start, end)
