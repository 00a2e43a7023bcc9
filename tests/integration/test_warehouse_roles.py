"""Least privilege in the warehouse (migration 0010_roles.sql, docs/SECURITY.md), against a real PostgreSQL.

A reader login can SELECT the warehouse and ops tables and change nothing; a writer login runs a whole
ingest night (staging tables, Great Expectations validation, the merge) but can neither create roles
nor drop a schema. Roles are cluster-wide: the login users get names unique to this run and are dropped
at the end (the two group roles stay, as on a real server).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import psycopg2.errors
import pytest
import yaml
from psycopg2 import sql

from nightly_ml import db
from nightly_ml.devtools.scratch import admin_execute, database_url, environment_set, login_url, specs_from
from nightly_ml.tasks import ingest

pytestmark = pytest.mark.integration

PROJECT_SPECS = Path(__file__).resolve().parents[2] / "include" / "specs"
SUFFIX = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
DATASET = f"roles_{uuid.uuid4().hex[:6]}"
DAY = datetime(2026, 3, 1, tzinfo=UTC)
WRITER, READER = "nightly_ml_writer", "nightly_ml_reader"


def create_login(admin_conn: psycopg2.extensions.connection, login: str, group: str, password: str) -> None:
    with admin_conn.cursor() as cur:
        cur.execute(db.compose("roles_login_user.sql", login=login, group=group), {"password": password})


def drop_login(url: str, login: str) -> None:
    admin_execute(url, f'DROP OWNED BY "{login}"')
    admin_execute(url, f'DROP ROLE IF EXISTS "{login}"')


@pytest.fixture(scope="module")
def logins(warehouse_url: str) -> Iterator[dict[str, str]]:
    """A reader and a writer login user (unique to this run) and their URLs; dropped afterwards."""
    users = {"reader": (f"nmt_reader_{SUFFIX}", READER), "writer": (f"nmt_writer_{SUFFIX}", WRITER)}
    urls = {}
    conn = psycopg2.connect(warehouse_url)
    try:
        with conn:
            for kind, (login, group) in users.items():
                password = uuid.uuid4().hex
                create_login(conn, login, group, password)
                urls[kind] = login_url(warehouse_url, login, password)
        yield urls
    finally:
        conn.close()
        for login, _ in users.values():
            drop_login(warehouse_url, login)


@pytest.fixture(scope="module")
def night_as_writer(logins: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> sql.Identifier:
    """One simulated ingest night run by the writer login: its own dataset, so its tables are the writer's."""
    spec_dir = tmp_path_factory.mktemp("role_specs")
    raw = yaml.safe_load((PROJECT_SPECS / "churn.yaml").read_text())
    raw = {**raw, "name": DATASET, "source": {**raw["source"], "rows_per_interval": 200}}
    (spec_dir / f"{DATASET}.yaml").write_text(yaml.safe_dump(raw))
    start, end = DAY, DAY + timedelta(days=1)
    with specs_from(spec_dir), environment_set("WAREHOUSE_URL", logins["writer"]):
        files = ingest.extract(DATASET, start, end)
        staged = ingest.stage(DATASET, start, end, files, "roles-test")
        validated = ingest.validate(DATASET, start, end, staged, "roles-test")
        ingest.merge(DATASET, start, end, staged, validated, "roles-test")
        ingest.finish(DATASET, start, staged)
    return sql.Identifier("warehouse", DATASET)


def run(url: str, statement: str | sql.Composable, params: tuple = ()) -> list[tuple]:
    conn = psycopg2.connect(db.libpq_url(url))
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, params or None)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def denied(url: str, statement: str | sql.Composable, params: tuple = ()) -> None:
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        run(url, statement, params)


def count(url: str, table: sql.Identifier) -> int:
    ((rows,),) = run(url, sql.SQL("SELECT count(*) FROM {}").format(table))
    return int(rows)


def test_the_writer_runs_an_ingest_night_and_owns_what_it_created(
    warehouse_url: str, logins: dict[str, str], night_as_writer: sql.Identifier
) -> None:
    assert run(logins["writer"], "SELECT current_user, session_user")[0] == (WRITER, f"nmt_writer_{SUFFIX}")
    rows = count(logins["writer"], night_as_writer)
    ((merged,),) = run(logins["writer"], "SELECT rows_merged FROM ops.load_audit WHERE dataset = %s", (DATASET,))
    assert rows == merged > 0
    owners = run(warehouse_url, "SELECT DISTINCT tableowner FROM pg_tables WHERE tablename LIKE %s", (f"{DATASET}%",))
    assert owners == [(WRITER,)], "the group owns the dataset's tables, so every writer login can extend them"


def test_the_reader_selects_but_cannot_change_anything(logins: dict[str, str], night_as_writer: sql.Identifier) -> None:
    reader = logins["reader"]
    predictions = sql.Identifier("warehouse", f"{DATASET}_predictions")
    rows = count(reader, night_as_writer)  # a table the writer created after migration 0010
    assert rows > 0
    assert count(reader, predictions) == 0
    assert run(reader, "SELECT dataset FROM ops.load_audit WHERE dataset = %s", (DATASET,)) == [(DATASET,)]
    denied(reader, "INSERT INTO ops.retrain_triggers VALUES (%s, now(), now() + interval '1 day')", (DATASET,))
    denied(reader, sql.SQL("DELETE FROM {}").format(night_as_writer))
    denied(reader, "UPDATE ops.load_audit SET reason = 'x' WHERE dataset = %s", (DATASET,))
    denied(reader, sql.SQL("DROP TABLE {}").format(predictions))
    denied(reader, "DROP TABLE ops.load_audit")
    denied(reader, "CREATE TABLE warehouse.reader_was_here (x int)")
    assert count(reader, night_as_writer) == rows


def test_the_writer_cannot_create_roles_schemas_or_drop_a_schema(
    logins: dict[str, str], night_as_writer: sql.Identifier
) -> None:
    writer = logins["writer"]
    denied(writer, f'CREATE ROLE "nmt_intruder_{SUFFIX}" LOGIN')
    denied(writer, f"GRANT {WRITER} TO nmt_reader_{SUFFIX}")
    denied(writer, "DROP SCHEMA warehouse CASCADE")
    denied(writer, "DROP SCHEMA ops CASCADE")
    denied(writer, "CREATE SCHEMA intruder")
    denied(writer, "DROP TABLE ops.load_audit")
    denied(writer, "ALTER TABLE ops.load_audit ADD COLUMN intruder int")
    assert count(writer, night_as_writer) > 0


def test_the_roles_migration_runs_again_and_under_a_non_superuser_owner(pg_admin_url: str, warehouse_url: str) -> None:
    """Idempotent; and as in docker-compose.yml, where the database owner (no superuser, no CREATEROLE, granted
    the group roles by docker/postgres-init.sh) runs the migrations."""
    assert db.migrate(warehouse_url) == []
    run(warehouse_url, db.load_sql("migrations/0010_roles.sql"))
    owner, password = f"nmt_owner_{SUFFIX}", uuid.uuid4().hex
    database = f"nmt_roles_{SUFFIX}"
    admin_execute(pg_admin_url, f"CREATE ROLE \"{owner}\" LOGIN PASSWORD '{password}'")
    admin_execute(pg_admin_url, f'GRANT {WRITER}, {READER} TO "{owner}" WITH ADMIN OPTION')
    admin_execute(pg_admin_url, f'CREATE DATABASE "{database}" OWNER "{owner}"')
    owner_url = login_url(database_url(pg_admin_url, database), owner, password)
    try:
        applied = db.migrate(owner_url)
        assert "0010_roles.sql" in applied
        assert db.migrate(owner_url) == []
        schemas = run(owner_url, "SELECT nspname, pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'ops'")
        assert schemas == [("ops", owner)], "the owner keeps the schemas: the writer cannot drop them"
        grants = run(owner_url, "SELECT has_table_privilege('nightly_ml_reader', 'ops.load_audit', 'SELECT')")
        assert grants == [(True,)]
    finally:
        admin_execute(pg_admin_url, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin_execute(pg_admin_url, f'DROP ROLE IF EXISTS "{owner}"')


def test_compose_bootstrap_gives_the_workers_a_writer_login_and_the_owner_the_migrations(
    tmp_path: Path,
) -> None:
    """docker/postgres-init.sh, run as the postgres image runs it, on a private server of its own (its roles
    are cluster-wide): then airflow-init's migrations as the `warehouse` owner, and the workers' login
    `nightly_ml_worker` (docker-compose.yml's WAREHOUSE_URL) working as the writer group and no more."""
    import logging
    import subprocess

    from nightly_ml.devtools import embedded

    # pgserver logs from an atexit hook, after pytest has closed its capture streams.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    server = embedded._server(tmp_path / "pgdata")
    try:
        admin = server.get_uri()
        socket_dir = admin.split("host=", 1)[1].split("&", 1)[0]
        import pgserver

        # the image runs the script with its own psql: here pgserver's, beside the server it starts
        bindir = Path(pgserver.__file__).parent / "pginstall" / "bin"
        passwords = {name: uuid.uuid4().hex for name in ("AIRFLOW", "WAREHOUSE", "MLFLOW", "WAREHOUSE_WORKER")}
        env = {
            "PATH": f"{bindir}:{os.environ['PATH']}",
            "PGHOST": socket_dir,
            "POSTGRES_USER": "postgres",
            **{f"{name}_DB_PASSWORD": password for name, password in passwords.items() if name != "WAREHOUSE_WORKER"},
            "WAREHOUSE_WORKER_PASSWORD": passwords["WAREHOUSE_WORKER"],
        }
        script = Path(__file__).resolve().parents[2] / "docker" / "postgres-init.sh"
        done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        warehouse = embedded.socket_url(admin, "warehouse")
        owner = login_url(warehouse, "warehouse", passwords["WAREHOUSE"])
        worker = login_url(warehouse, "nightly_ml_worker", passwords["WAREHOUSE_WORKER"])
        assert "0010_roles.sql" in db.migrate(owner)
        assert run(worker, "SELECT current_user, session_user") == [(WRITER, "nightly_ml_worker")]
        assert run(worker, "SELECT has_table_privilege('ops.load_audit', 'INSERT')") == [(True,)]
        run(worker, "CREATE TABLE warehouse.worker_made (x int)")
        assert run(owner, "SELECT tableowner FROM pg_tables WHERE tablename = 'worker_made'") == [(WRITER,)]
        denied(worker, "DROP SCHEMA ops CASCADE")
        denied(worker, "ALTER TABLE ops.load_audit ADD COLUMN intruder int")
        denied(worker, "CREATE ROLE intruder LOGIN")
    finally:
        embedded.stop(tmp_path)
