"""The bad-input corpus (tests/corpus/manifest.yaml) through the real ingest steps, against real PostgreSQL.

Each manifest entry is dropped as the only file of one interval of its own dataset (a copy of the
corpus spec under another name, so entries never see each other's keys), then run extract → stage
(COPY) → validate → merge → archive as the DAG does. Checked afterwards: the outcome the manifest
names, and the state it leaves — nothing merged on a rejection, every quarantine record with its
rule and reason, the raw input byte for byte in the landing folder (rejected) or the archive (merged).
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import re
import shutil
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from psycopg2 import sql

from nightly_ml import db, storage
from nightly_ml.devtools.scratch import specs_from
from nightly_ml.etl import sources
from nightly_ml.etl.staging import BatchRejected
from nightly_ml.spec import DatasetSpec, load_spec
from nightly_ml.tasks import ingest

pytestmark = pytest.mark.integration

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
MANIFEST = yaml.safe_load((CORPUS / "manifest.yaml").read_text())
ENTRIES: list[dict[str, Any]] = MANIFEST["entries"]


def dataset_name(entry: dict[str, Any]) -> str:
    """A spec name (``^[a-z][a-z0-9_]{0,40}$``) per entry, readable in the database."""
    stem = entry["file"].split(".")[0]
    return "c_" + re.sub(r"[^a-z0-9]+", "_", stem.lower()).strip("_")[:38]


# --------------------------------------------------------------------------- generators (big inputs)


def _clean_rows() -> tuple[list[str], list[list[str]]]:
    header, *rows = list(csv.reader(io.StringIO((CORPUS / "clean.csv").read_text(), newline="")))
    return header, rows


def _write(path: Path, header: list[str], rows: list[list[str]], tail: str = "") -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buffer.getvalue() + tail, encoding="utf-8")


def _wide_header(path: Path, columns: int) -> None:
    header, rows = _clean_rows()
    extra = [f"extra_{i:04d}" for i in range(columns - len(header))]
    _write(path, header + extra, [row + ["x"] * len(extra) for row in rows])


def _wide_row(path: Path, fields: int) -> None:
    header, rows = _clean_rows()
    _write(path, header, rows, "c-0101," + ",".join(str(i) for i in range(fields - 1)) + "\n")


def _big_value(megabytes: int) -> str:
    # Hex of an extendable-output hash: deterministic, and no compression makes it small.
    return hashlib.shake_256(b"nightly-ml corpus").hexdigest(megabytes * 1_000_000 // 2)


def _big_field(path: Path, column: str, megabytes: int, tail: str = "") -> None:
    header, rows = _clean_rows()
    rows[0][header.index(column)] = _big_value(megabytes)
    _write(path, header, rows, tail)


def _big_field_and_bad_line(path: Path, column: str, megabytes: int) -> None:
    _big_field(path, column, megabytes, tail="c-0101,too,few,fields\n")


GENERATORS: dict[str, Callable[..., None]] = {
    "wide_header": _wide_header,
    "wide_row": _wide_row,
    "big_field": _big_field,
    "big_field_and_bad_line": _big_field_and_bad_line,
}


def test_every_generator_of_the_manifest_exists() -> None:
    assert set(MANIFEST["generators"]) == set(GENERATORS)


# --------------------------------------------------------------------------- running one entry


@pytest.fixture(scope="module")
def corpus_specs(warehouse_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One spec per entry: the corpus spec under the entry's dataset name, reading its own drop folder."""
    spec_dir = tmp_path_factory.mktemp("corpus_specs")
    raw = yaml.safe_load((CORPUS / MANIFEST["spec"]).read_text())
    for entry in ENTRIES:
        name = dataset_name(entry)
        spec = {**raw, "name": name, "source": {**raw["source"], "path": f"drop/{name}"}}
        (spec_dir / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    with specs_from(spec_dir):
        yield spec_dir


def interval(spec: DatasetSpec, day: date) -> tuple[datetime, datetime]:
    """The local day as UTC instants (23 or 25 hours on DST days)."""
    zone = ZoneInfo(spec.timezone)
    start = datetime(day.year, day.month, day.day, tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=zone)
    return start.astimezone(ZoneInfo("UTC")), end.astimezone(ZoneInfo("UTC"))


def drop(entry: dict[str, Any], folder: Path) -> Path:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    target = folder / entry["file"]
    recipe = entry.get("generator")
    if recipe:
        GENERATORS[recipe["name"]](target, **{k: v for k, v in recipe.items() if k != "name"})
    else:
        shutil.copyfile(CORPUS / entry["file"], target)
    return target


def preload(spec: DatasetSpec, file: str) -> None:
    """Merge a stored corpus file on the manifest's day first (the warehouse an entry meets)."""
    start, end = interval(spec, MANIFEST["day"])
    drop({"file": file}, sources.landing_folder(spec, start))
    run_night(spec.name, start, end)
    assert audit(spec, start)[0] == "merged"


def run_night(dataset: str, start: datetime, end: datetime) -> None:
    run_id = f"corpus-{dataset}"
    files = ingest.extract(dataset, start, end)
    staged = ingest.stage(dataset, start, end, files, run_id)
    validated = ingest.validate(dataset, start, end, staged, run_id)
    ingest.merge(dataset, start, end, staged, validated, run_id)
    ingest.finish(dataset, start, staged)


def query(statement: sql.Composable | str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with db.transaction() as conn, conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
        cur.execute(statement, params)
        return cur.fetchall()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- the test


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["file"] for e in ENTRIES])
def test_corpus_entry(corpus_specs: Path, entry: dict[str, Any]) -> None:
    name = dataset_name(entry)
    spec = load_spec(name)
    expect = entry["expect"]
    start, end = interval(spec, entry.get("day", MANIFEST["day"]))
    db.ensure_dataset_tables(spec)
    for file in entry.get("preload", []):
        preload(spec, file)
    before = warehouse_rows(spec)
    landing = sources.landing_folder(spec, start)
    raw = drop(entry, landing)
    digest = sha256(raw)

    if expect["outcome"] == "rejected":
        with pytest.raises(BatchRejected) as rejected:
            run_night(name, start, end)
        message = str(rejected.value)
        assert expect["error"] in message
        assert entry["file"] in message, f"the rejection must name the file: {message}"
        assert warehouse_rows(spec) == before, "a rejected batch must change nothing in the warehouse"
        assert_rejected_state(spec, start, raw, digest, message)
        assert quarantined(spec, start) == expect.get("quarantined", 0)
    else:
        run_night(name, start, end)
        assert_merged_state(spec, start, entry["file"], digest, expect)
        others = [row for row in warehouse_rows(spec) if row[0] != start]
        assert others == [row for row in before if row[0] != start], "other intervals must stay as they were"
    assert_quarantine_records_carry_their_reason(spec, start, entry["file"])
    for column, values in expect.get("stored", {}).items():
        assert_stored_verbatim(spec, column, values)
    # the injection strings were data: every table they name is still there
    assert query("SELECT to_regclass('ops.load_audit'), to_regclass('ops.quarantine')")[0] == (
        "ops.load_audit",
        "ops.quarantine",
    )


def quarantine_rules(spec: DatasetSpec, start: datetime) -> dict[str, int]:
    rows = query(
        "SELECT rule, count(*) FROM ops.quarantine WHERE dataset = %s AND interval_start = %s GROUP BY rule",
        (spec.name, start),
    )
    return dict(rows)


def quarantined(spec: DatasetSpec, start: datetime) -> int:
    return int(audit(spec, start)[2])


def warehouse_rows(spec: DatasetSpec) -> list[tuple[Any, ...]]:
    """(interval, key, row hash) of every warehouse row of the dataset, in key order."""
    return query(
        sql.SQL("SELECT _interval_start, {key}, _row_hash FROM {table} ORDER BY {key}").format(
            key=sql.Identifier(spec.key.name), table=db.warehouse_table(spec)
        )
    )


def audit(spec: DatasetSpec, start: datetime) -> tuple[Any, ...]:
    rows = query(
        "SELECT status, rows_merged, rows_quarantined, reason FROM ops.load_audit "
        "WHERE dataset = %s AND interval_start = %s",
        (spec.name, start),
    )
    assert len(rows) == 1, rows
    return rows[0]


def staging_tables(spec: DatasetSpec) -> list[str]:
    rows = query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'staging' AND table_name LIKE %s",
        (f"{spec.name}\\_\\_%",),
    )
    return [r[0] for r in rows]


def assert_rejected_state(spec: DatasetSpec, start: datetime, raw: Path, digest: str, message: str) -> None:
    status, merged, _, reason = audit(spec, start)
    assert (status, merged) == ("rejected", 0)
    assert reason and reason in message
    assert raw.is_file() and sha256(raw) == digest, "the raw input must stay in the landing folder as it came"
    assert not (sources.archive_folder(spec, start) / raw.name).exists()
    mails = [p.read_text(errors="replace") for p in storage.outbox_root().glob("*.eml")]
    assert any(spec.name in m and "rejected" in m.lower() for m in mails), "ops must get a mail"


def assert_merged_state(spec: DatasetSpec, start: datetime, file: str, digest: str, expect: dict[str, Any]) -> None:
    merged = expect["merged"]
    rules = expect.get("rules", {}) if expect["outcome"] == "quarantine" else {}
    assert quarantine_rules(spec, start) == rules
    assert [row[0] for row in warehouse_rows(spec)].count(start) == merged
    status, rows_merged, rows_quarantined, reason = audit(spec, start)
    assert (status, rows_merged, rows_quarantined, reason) == ("merged", merged, expect.get("quarantined", 0), None)
    archived = sources.archive_folder(spec, start) / file
    assert archived.is_file() and sha256(archived) == digest, "the raw input must be archived as it came"
    assert not sources.landing_folder(spec, start).exists()
    assert staging_tables(spec) == []


def assert_quarantine_records_carry_their_reason(spec: DatasetSpec, start: datetime, file: str) -> None:
    records = query(
        "SELECT rule, detail, source_file, row_data IS NOT NULL OR raw_line IS NOT NULL, line_number "
        "FROM ops.quarantine WHERE dataset = %s AND interval_start = %s",
        (spec.name, start),
    )
    for rule, detail, source_file, has_input, line_number in records:
        assert rule and detail, (rule, detail)
        assert source_file == file
        assert has_input, f"{rule}: the quarantined input itself must be kept"
        assert line_number is None or line_number >= 2


def assert_stored_verbatim(spec: DatasetSpec, column: str, values: list[str]) -> None:
    stored = {
        r[0] for r in query(sql.SQL("SELECT {} FROM {}").format(sql.Identifier(column), db.warehouse_table(spec)))
    }
    wanted = {datetime.fromisoformat(v) for v in values} if column == spec.event_time else set(values)
    assert wanted <= stored, sorted(wanted - stored)


# --------------------------------------------------------------------------- the two event-time parses

# Entries that reach the typed table (their batch is not refused before the row rules run).
TYPED_ENTRIES = [
    e for e in ENTRIES if e["expect"]["outcome"] != "rejected" and not e.get("generator") and not e.get("preload")
]
# Entries with an event time of another shape than TIME_SHAPES (or one the zone skips): the careful parse.
CAREFUL_EVENT_TIMES = {
    "bad_timestamps.csv",
    "dst_gap_local_times.csv",
    "event_time_offsets.csv",
    "naive_local_times.csv",
}


def typed_rows(spec: DatasetSpec, stage_table: str) -> list[tuple[Any, ...]]:
    """Every row of the typed table and of the bad rows, values as text, in row order."""
    typed = sql.Identifier("staging", f"{stage_table}__v")
    bad = sql.Identifier("staging", f"{stage_table}__bad")
    return query(sql.SQL("SELECT t::text FROM {} AS t ORDER BY _row_id").format(typed)) + query(
        sql.SQL("SELECT b::text FROM {} AS b ORDER BY _row_id").format(bad)
    )


@pytest.mark.parametrize("entry", TYPED_ENTRIES, ids=[e["file"] for e in TYPED_ENTRIES])
def test_the_plain_event_time_parse_agrees_with_the_careful_one(corpus_specs: Path, entry: dict[str, Any]) -> None:
    """Validation first tries the cheap parse that assumes plain event times and falls back to the careful
    one when a batch has any other: whichever ran, the typed table and the bad rows are the careful ones, in
    parallel workers or not; and the gate (rules.row_rule_gate) finds exactly the rows that break a rule."""
    from nightly_ml.etl import warehouse
    from nightly_ml.etl.rules import row_rule_gate, row_rules
    from nightly_ml.etl.staging import StageResult
    from nightly_ml.etl.typed_tables import create_typed_table

    name = dataset_name(entry)
    spec = load_spec(name)
    start, end = interval(spec, entry.get("day", MANIFEST["day"]))
    db.ensure_dataset_tables(spec)
    drop(entry, sources.landing_folder(spec, start))
    files = ingest.extract(name, start, end)
    stage = StageResult.from_dict(ingest.stage(name, start, end, files, f"typed-{name}"))
    rules = row_rules(spec)
    params = {k: v for rule in rules for k, v in rule.params.items()}
    gate = row_rule_gate(spec, rules)
    made_by = {}
    tables = {}
    # The careful parse testing every rule on every row (no gate) is the reference.
    for plain_first, parallel, gated in [
        *itertools.product((True, False), (False, True), (True,)),
        (False, False, False),
    ]:
        with db.transaction() as conn:
            if parallel:
                force_parallel_plans(conn)
            made_by[plain_first, parallel, gated] = create_typed_table(
                conn,
                spec,
                stage,
                start,
                end,
                [r.broken for r in rules],
                params,
                plain_first=plain_first,
                gate=gate if gated else None,
            )
        tables[plain_first, parallel, gated] = typed_rows(spec, stage.rows_table)
    with db.transaction() as conn:
        warehouse.drop_staging(conn, stage.rows_table)
    reference = tables[False, False, False]
    for parallel in (False, True):
        plain = "careful" if entry["file"] in CAREFUL_EVENT_TIMES else "plain"
        assert made_by[True, parallel, True] == plain, made_by
        assert made_by[False, parallel, True] == "careful"
        assert tables[True, parallel, True] == reference
        assert tables[False, parallel, True] == reference
    assert len(reference) >= stage.rows_staged


def test_the_digit_shape_is_the_text_with_every_digit_zeroed(corpus_specs: Path) -> None:
    """The event time's shape (nine replace calls) is what translate gives, for any text: plain and odd times,
    every digit, letters, multibyte characters (whose bytes are never ASCII digits), empty and NULL."""
    from nightly_ml.etl.typed_tables import digit_shape

    samples = [
        "2026-03-10T00:00:00.018120+00:00",
        "2026-03-02T10:11:k2.5",
        "^026-01-01 00:00:00",
        "0123456789 9876543210",
        "\uff12\uff10\uff12\uff16-\uff10\uff13 12:00",  # fullwidth digits are no ASCII digits
        "1970-01-01T00:00:00Zé€𝄞",
        "",
        None,
    ]
    shapes = query(
        sql.SQL(
            "SELECT {} IS NOT DISTINCT FROM translate(s, '0123456789', '0000000000'), {} FROM unnest(%s::text[]) AS s"
        ).format(digit_shape(sql.Identifier("s")), digit_shape(sql.Identifier("s"))),
        (samples,),
    )
    assert [same for same, _ in shapes] == [True] * len(samples)
    assert shapes[0][1] == "0000-00-00T00:00:00.000000+00:00"


def force_parallel_plans(conn: Any) -> None:
    """Plan even a few rows for PostgreSQL's parallel workers, as a batch of ~200k rows and more is: what the
    workers evaluate must give the same rows (and not fail: no subtransaction may run in a worker)."""
    with conn.cursor() as cur:
        for setting, value in (
            ("parallel_setup_cost", "0"),
            ("parallel_tuple_cost", "0"),
            ("min_parallel_table_scan_size", "0"),
            ("max_parallel_workers_per_gather", "2"),
        ):
            cur.execute("SELECT set_config(%s, %s, true)", (setting, value))
