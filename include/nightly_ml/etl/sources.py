"""Extract: bring one interval's raw input into the landing folder, whatever the source.

Every source ends as files in ``landing/<dataset>/<partition>/``: rows in ``part-*.csv`` (or
``.csv.gz``) or ``*.parquet``, late labels in ``labels-*.csv``/``labels-*.parquet``. The folder stays there
until the interval is safely merged, then moves to ``archive/`` (see :func:`archive`).
Re-running an interval finds its files in the archive again, so re-runs are idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from psycopg2 import sql

from nightly_ml import storage
from nightly_ml.config import source_database_url
from nightly_ml.intervals import partition_name
from nightly_ml.spec import DatabaseSource, DatasetSpec, FilesSource, SimulatorSource
from nightly_ml.storage import StoragePath

FileKind = Literal["rows", "labels"]
SUPPORTED_SUFFIXES = {".csv": "csv", ".parquet": "parquet"}


class NoInputYet(RuntimeError):
    """The interval's input has not arrived; retried with backoff by Airflow."""


@dataclass(frozen=True)
class RawFile:
    path: StoragePath
    format: Literal["csv", "parquet"]
    kind: FileKind

    def as_dict(self) -> dict[str, str]:
        return {"path": str(self.path), "format": self.format, "kind": self.kind}

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> RawFile:
        return cls(storage.as_path(data["path"]), data["format"], data["kind"])  # type: ignore[arg-type]


def files_root(spec: DatasetSpec) -> StoragePath:
    if isinstance(spec.source, FilesSource):
        return storage.files_source_root(spec.source.path)
    return storage.landing_root() / spec.name


def landing_folder(spec: DatasetSpec, start: datetime) -> StoragePath:
    return files_root(spec) / partition_name(spec, start)


def archive_folder(spec: DatasetSpec, start: datetime) -> StoragePath:
    return storage.archive_root() / spec.name / partition_name(spec, start)


def file_format(name: str) -> Literal["csv", "parquet"] | None:
    """``csv`` for ``*.csv`` and gzip-compressed ``*.csv.gz``, ``parquet`` for ``*.parquet``; else None."""
    lowered = name.lower()
    if lowered.endswith(".csv.gz"):
        return "csv"
    return SUPPORTED_SUFFIXES.get(lowered[lowered.rfind(".") :]) if "." in lowered else None  # type: ignore[return-value]


def list_raw_files(folder: StoragePath) -> list[RawFile]:
    """Row and label files of a partition folder, in name order; other files are ignored."""
    found: list[RawFile] = []
    for path in sorted(folder.iterdir()):
        fmt = file_format(path.name)
        if fmt is None or (not path.is_file() and not path.is_symlink()):
            continue
        kind: FileKind = "labels" if path.name.startswith("labels") else "rows"
        found.append(RawFile(path, fmt, kind))  # type: ignore[arg-type]
    return found


def expected_input(spec: DatasetSpec, start: datetime) -> str:
    """Where the interval's input is expected, for messages and mails."""
    if isinstance(spec.source, DatabaseSource):
        return f"table {spec.source.table} (database in ${spec.source.url_env})"
    marker = (
        f", with its marker file {spec.source.success_marker}"
        if isinstance(spec.source, FilesSource) and (spec.source.success_marker)
        else ""
    )
    return f"{landing_folder(spec, start)}{marker}"


def input_ready(spec: DatasetSpec, start: datetime, end: datetime) -> bool:
    """Whether the interval's input has arrived: its files (and marker) dropped, or rows in the source table."""
    source = spec.source
    if isinstance(source, SimulatorSource):
        return True
    if isinstance(source, DatabaseSource):
        return _source_rows(spec, source, start, end) > 0
    if archive_folder(spec, start).is_dir():
        return True  # a re-run of a merged interval
    landing = landing_folder(spec, start)
    if not landing.is_dir() or not any(f.kind == "rows" for f in list_raw_files(landing)):
        return False
    return source.success_marker is None or (landing / source.success_marker).exists()


def _source_rows(spec: DatasetSpec, source: DatabaseSource, start: datetime, end: datetime) -> int:
    import psycopg2

    from nightly_ml.db import libpq_url

    url = source_database_url(source.url_env)
    if not url:
        raise RuntimeError(f"source database URL variable {source.url_env} is not set for dataset {spec.name}")
    schema, _, name = source.table.rpartition(".")
    table = sql.Identifier(schema, name) if schema else sql.Identifier(name)
    query = sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {table} WHERE {ts} >= %(start)s AND {ts} < %(end)s LIMIT 1) t")
    conn = psycopg2.connect(libpq_url(url))
    try:
        with conn.cursor() as cur:
            cur.execute(query.format(table=table, ts=sql.Identifier(spec.event_time)), {"start": start, "end": end})
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def extract(spec: DatasetSpec, start: datetime, end: datetime) -> list[RawFile]:
    """Make sure the interval's raw files are in the landing folder and list them."""
    source = spec.source
    if isinstance(source, SimulatorSource):
        return _extract_simulated(spec, source, start, end)
    if isinstance(source, DatabaseSource):
        return _extract_database(spec, source, start, end)
    return _extract_dropped_files(spec, start)


def _extract_dropped_files(spec: DatasetSpec, start: datetime) -> list[RawFile]:
    landing = landing_folder(spec, start)
    archived = archive_folder(spec, start)
    if not landing.is_dir() and archived.is_dir():
        # A re-run of an interval that was already merged: its input was archived.
        storage.copy_tree(archived, landing)
    if not landing.is_dir():
        raise NoInputYet(f"no input folder {landing} for {spec.name} yet (expected files dropped there)")
    files = list_raw_files(landing)
    if not any(f.kind == "rows" for f in files):
        others = sorted(p.name for p in landing.iterdir() if file_format(p.name) is None)
        ignored = f" (ignored, not a supported format: {others})" if others else ""
        raise NoInputYet(f"no row files (.csv, .csv.gz, .parquet) in {landing} yet{ignored}")
    return files


def _extract_simulated(spec: DatasetSpec, source: SimulatorSource, start: datetime, end: datetime) -> list[RawFile]:
    from nightly_ml.etl import simulator, simulator_files

    folder = landing_folder(spec, start)
    folder.mkdir(parents=True, exist_ok=True)
    rows_path = simulator_files.write_batch(
        simulator.generate_batch(spec, start, end),
        folder / "part-0.csv",
        malformed_line_rate=source.faults.malformed_lines,
        seed=source.seed,
    )
    files = [RawFile(rows_path, "csv", "rows")]
    # Labels arriving in the history's first nights belong to rows from before it: no such keys exist.
    delayed_rows_start = start - timedelta(days=source.label_delay_days)
    labels = simulator.generate_labels(spec, start, end) if delayed_rows_start >= spec.start else []
    if len(labels):
        files.append(RawFile(simulator_files.write_batch(labels, folder / "labels-0.csv"), "csv", "labels"))
    return files


def _extract_database(spec: DatasetSpec, source: DatabaseSource, start: datetime, end: datetime) -> list[RawFile]:
    import psycopg2

    from nightly_ml.db import libpq_url

    url = source_database_url(source.url_env)
    if not url:
        raise RuntimeError(f"source database URL variable {source.url_env} is not set for dataset {spec.name}")
    folder = landing_folder(spec, start)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "part-0.csv"
    schema, _, name = source.table.rpartition(".")
    table = sql.Identifier(schema, name) if schema else sql.Identifier(name)
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in spec.input_columns)
    query = sql.SQL("SELECT {columns} FROM {table} WHERE {ts} >= %(start)s AND {ts} < %(end)s ORDER BY {key}").format(
        columns=columns, table=table, ts=sql.Identifier(spec.event_time), key=sql.Identifier(spec.key.name)
    )
    conn = psycopg2.connect(libpq_url(url))
    try:
        with conn.cursor() as cur:
            cur.execute("SET TIME ZONE 'UTC'")
            # COPY takes no parameters: bind them client-side into the inner SELECT first.
            bound = cur.mogrify(query, {"start": start, "end": end}).decode()
            storage.write_whole(
                target, lambda out: cur.copy_expert(f"COPY ({bound}) TO STDOUT WITH (FORMAT csv, HEADER true)", out)
            )
    finally:
        conn.close()
    return [RawFile(target, "csv", "rows")]


def archive(spec: DatasetSpec, start: datetime) -> StoragePath | None:
    """Move a merged interval's landing folder to the archive (replacing an older copy)."""
    landing = landing_folder(spec, start)
    if not landing.is_dir():
        return None
    target = archive_folder(spec, start)
    storage.move_tree(landing, target)
    return target
