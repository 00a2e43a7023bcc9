"""The staged row counts are COPY's own (no scan after): equal to the staging tables' rows on every path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from psycopg2 import sql

from nightly_ml import db
from nightly_ml.etl import simulator, simulator_files, staging
from nightly_ml.etl.sources import RawFile
from nightly_ml.spec import load_spec

pytestmark = pytest.mark.integration

START = datetime(2024, 6, 5, tzinfo=UTC)


def staged_rows(url: str, table: str) -> int:
    with db.transaction(url) as conn, conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("staging", table)))
        return int(cur.fetchone()[0])


def test_rows_and_labels_staged_are_the_rows_copied_by_every_path(warehouse_url: str, tmp_path: Path) -> None:
    spec = load_spec("churn")
    batch = simulator.generate_batch(spec, START, START + timedelta(days=1), rows=400)
    clean = simulator_files.write_batch(batch.iloc[:150], tmp_path / "clean.csv")
    # Lines with extra fields send the file down the record-by-record path, which quarantines them.
    broken = simulator_files.write_batch(batch.iloc[150:300], tmp_path / "broken.csv", malformed_line_rate=0.1, seed=3)
    parquet = simulator_files.write_batch(batch.iloc[300:], tmp_path / "rows.parquet", fmt="parquet")
    labels = tmp_path / "labels.csv"
    pd.DataFrame({spec.key.name: batch[spec.key.name].iloc[:40], spec.label.name: 1}).to_csv(labels, index=False)
    files = [
        RawFile(clean, "csv", "rows"),
        RawFile(broken, "csv", "rows"),
        RawFile(parquet, "parquet", "rows"),
        RawFile(labels, "csv", "labels"),
    ]
    db.ensure_dataset_tables(spec, warehouse_url)
    with db.transaction(warehouse_url) as conn:
        stage = staging.stage_files(conn, spec, START, files)
    assert stage.bad_lines, "the broken file took the record-by-record path"
    assert stage.rows_staged == staged_rows(warehouse_url, stage.rows_table) == 400 - len(stage.bad_lines)
    assert stage.labels_table is not None
    assert stage.labels_staged == staged_rows(warehouse_url, stage.labels_table) == 40
