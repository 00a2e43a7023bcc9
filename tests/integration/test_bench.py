"""``make bench`` at a tiny scale against the test server: every section runs and reports positive rates.

No wall-clock thresholds: the numbers depend on the machine; only their presence and sign are checked.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import sys
from pathlib import Path

import psycopg2
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from scripts import bench

pytestmark = pytest.mark.integration

ROWS = 20_000
PSQL_MISSING = "psql is not on PATH: the loader-vs-psql \\copy comparison cannot run here"


@pytest.fixture(scope="module")
def output(pg_admin_url: str) -> str:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = bench.main(["--quick", "--rows", str(ROWS), "--admin-url", pg_admin_url])
    assert code == 0
    return buffer.getvalue()


def table_rows(output: str) -> dict[str, list[str]]:
    """The final table's rows by measurement name: section, measurement, rows, seconds, rows/s, peak, note."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("section "))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.strip():
            continue
        if not line.startswith(("load ", "ingest ", "score ", "monitor ")):
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[1]] = cells
    return rows


def rate(row: list[str]) -> float:
    return float(row[4].replace(",", ""))


def find(rows: dict[str, list[str]], prefix: str) -> list[str]:
    return next(cells for name, cells in rows.items() if name.startswith(prefix))


def test_loader_and_to_sql_report_positive_rates(output: str) -> None:
    rows = table_rows(output)
    loader = find(rows, "loader: staging.stage_files")
    to_sql = find(rows, "pandas read_csv + DataFrame.to_sql")
    assert int(loader[2].replace(",", "")) == ROWS
    assert rate(loader) > 0
    assert rate(to_sql) > 0
    assert "rows/s" in output


def test_psql_copy_reports_a_positive_rate_and_the_ratio(output: str) -> None:
    if shutil.which("psql") is None:
        pytest.skip(PSQL_MISSING)
    psql = find(table_rows(output), "psql \\copy")
    assert rate(psql) > 0
    ratio = re.search(r"loader / psql \\copy = ([0-9.]+) \(issue target >= 0\.50\): (PASS|FAIL)", output)
    assert ratio is not None and float(ratio.group(1)) > 0


def test_scoring_and_monitoring_sections_report_rates_and_memory(output: str) -> None:
    rows = table_rows(output)
    streamed = find(rows, "scoring.write_predictions")
    in_memory = find(rows, "model.predict_proba")
    small = find(rows, f"compute_monitoring, {ROWS // 10:,}-row interval")
    large = find(rows, f"compute_monitoring, {ROWS:,}-row interval")
    for row in (streamed, in_memory, small, large):
        assert rate(row) > 0
        assert float(row[5]) >= 0  # task peak MiB
    assert int(streamed[2].replace(",", "")) == ROWS
    assert "monitoring memory: task peak" in output


def test_ingest_section_validates_and_merges(output: str) -> None:
    rows = table_rows(output)
    assert rate(find(rows, "validation.validate")) > 0
    assert rate(find(rows, "warehouse.merge_interval")) > 0


def test_the_bench_database_is_dropped_and_the_environment_restored(output: str, pg_admin_url: str) -> None:
    conn = psycopg2.connect(pg_admin_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (f"nightly_ml_bench_{os.getpid()}",))
            assert cur.fetchone()[0] == 0
    finally:
        conn.close()
    assert "nightly_ml_bench_" not in os.environ.get("WAREHOUSE_URL", "")


def test_each_measured_run_starts_after_a_checkpoint(output: str, warehouse_url: str, pg_admin_url: str) -> None:
    """settle() checkpoints (the last checkpoint's redo point passes the WAL written before it), says so in the
    report, and answers False for a role that may not checkpoint instead of failing the bench."""
    from nightly_ml.devtools.scratch import login_url
    from scripts.benchkit.database import settle

    assert "Each measured run starts after a CHECKPOINT" in output
    conn = psycopg2.connect(warehouse_url)
    conn.autocommit = True
    role = f"nightly_ml_bench_settle_{os.getpid()}"
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TEMP TABLE wal_writer AS SELECT g FROM generate_series(1, 1000) AS g")
            cur.execute("SELECT pg_current_wal_insert_lsn()")
            written = cur.fetchone()[0]
            assert settle(warehouse_url) is True
            cur.execute("SELECT redo_lsn >= %s::pg_lsn FROM pg_control_checkpoint()", (written,))
            assert cur.fetchone()[0] is True
            cur.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD 'settle'")
            assert settle(login_url(warehouse_url, role, "settle")) is False
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP ROLE IF EXISTS "{role}"')
        conn.close()


def test_side_by_side_report_and_baseline_expectations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The side-by-side section's pieces that need no bench env: the GX expectations and the Markdown/JSON."""
    from nightly_ml.spec import load_spec
    from scripts.benchkit import sidebyside

    kinds = {(e["type"], e["kwargs"]["column"]) for e in sidebyside.expectations(load_spec("churn"))}
    assert ("ExpectColumnValuesToBeUnique", "snapshot_id") in kinds
    assert ("ExpectColumnValuesToBeInSet", "plan") in kinds
    monkeypatch.setattr(sidebyside, "REPORT_DIR", tmp_path)
    side = [{"step": "drift", "ours": "a", "ours_s": 1.0, "baseline": "b", "baseline_s": 3.0}]
    data = {
        "rows": 10,
        "repeats": 3,
        "machine": "m",
        "load_start": "1",
        "load_end": "2",
        "side_by_side": side,
        "vs_psql": [{"task": "monitor", "seconds": 1.0, "ratio": 0.5, "target": "<= 1.5"}],
        "memory_rows": ["10 rows"],
        "memory": {"score": [1.5]},
        "imports": {"(empty DAG)": 1.0, "score.py": 2.0},
        "notes": ["n"],
        "history": [
            {
                "keys": "keys of their own nights",
                "stored_rows": 8,
                "intervals": 2,
                "stored_predictions": 5,
                **{f"empty_{step}_s": 1.0 for step in ("validate", "merge", "score")},
                **{"validate_s": 2.0, "merge_s": 1.5, "score_s": 1.25},
            }
        ],
    }
    json_path, md_path = sidebyside.write_reports(data)
    text = md_path.read_text(encoding="utf-8")
    assert "| drift | a | 1.00 | b | 3.00 | 3.0x |" in text and "| score.py | 2.00 | 2.00x |" in text
    assert "with history: keys of their own nights" in text and "with 5 predictions of other" in text
    assert "| merge | 1.00 | 1.50 | 1.50x |" in text and "| score | 1.00 | 1.25 | 1.25x |" in text
    assert json_path.exists()


def test_the_floor_of_a_typed_load_is_measured_against_psql(output: str) -> None:
    """The typed-load floor copies the whole clean batch into typed columns, finds no row breaking a rule (the
    simulator's default batch has no fault) and reports its sum as a ratio to psql \\copy."""
    if shutil.which("psql") is None:
        pytest.skip(PSQL_MISSING)
    floor = re.search(
        r"The floor of an optimistic typed load .*: ([0-9.]+) s = ([0-9.]+)x psql \\copy, "
        r"([0-9,]+) rows breaking a rule",
        output,
    )
    assert floor is not None
    assert float(floor.group(1)) > 0 and float(floor.group(2)) > 0
    assert floor.group(3) == "0"


def test_the_floor_counts_each_row_that_breaks_a_row_rule(warehouse_url: str) -> None:
    """The floor's check scan counts a row breaking any rule of the spec once, and leaves good rows alone:
    a null key, an event time outside the interval, a value out of range, a category not allowed, NaN."""
    from datetime import timedelta

    from psycopg2 import sql

    from nightly_ml.spec import load_spec
    from scripts.benchkit.common import LOAD_DAY
    from scripts.benchkit.database import column_types
    from scripts.benchkit.floor import _broken_row_condition

    spec = load_spec("churn")
    types = column_types(spec)
    numeric = next(f for f in spec.features if f.type == "float" and f.min is not None)
    category = next(f for f in spec.features if f.allowed)
    good = {
        spec.key.name: "k",
        spec.event_time: LOAD_DAY + timedelta(hours=1),
        spec.label.name: None,
        **{f.name: (f.allowed[0] if f.allowed else (f.min if f.min is not None else 1)) for f in spec.features},
    }
    for f in spec.features:
        if f.type == "boolean":
            good[f.name] = True
    broken = [
        {spec.key.name: None},
        {spec.event_time: LOAD_DAY - timedelta(hours=1)},
        {numeric.name: numeric.min - 1},
        {numeric.name: float("nan")},
        {category.name: "not-a-category"},
    ]
    rows = [good, {**good, spec.key.name: "k2"}] + [{**good, spec.key.name: f"b{i}", **b} for i, b in enumerate(broken)]
    columns = list(types)
    conn = psycopg2.connect(warehouse_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("CREATE TEMP TABLE floor_rows ({})").format(
                    sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(types[c])) for c in columns)
                )
            )
            for row in rows:
                cur.execute(
                    sql.SQL("INSERT INTO floor_rows ({}) VALUES ({})").format(
                        sql.SQL(", ").join(map(sql.Identifier, columns)),
                        sql.SQL(", ").join(sql.Placeholder() * len(columns)),
                    ),
                    [row[c] for c in columns],
                )
            cur.execute(
                sql.SQL("SELECT count(*) FILTER (WHERE {}) FROM floor_rows").format(_broken_row_condition(spec))
            )
            assert cur.fetchone()[0] == len(broken)
    finally:
        conn.rollback()
        conn.close()
