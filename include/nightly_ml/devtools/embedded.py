"""Embedded defaults for one machine: a PostgreSQL server from the ``pgserver`` wheel.

``python -m nightly_ml.devtools.embedded start DATA_DIR`` starts (or reuses) the server kept in
``DATA_DIR/pgdata`` and prints a libpq URL for the ``warehouse`` database;
``python -m nightly_ml.devtools.embedded stop DATA_DIR`` stops it. The server keeps running between
commands so that every Airflow task process can reach it through ``WAREHOUSE_URL``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import quote

import psycopg2


def _server(pgdata: Path):
    import pgserver

    pgdata.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server outlives this process, for the task processes that follow
    return pgserver.get_server(pgdata, cleanup_mode=None)


def socket_url(server_uri: str, database: str) -> str:
    """pgserver hands out ``postgresql://postgres:@/postgres?host=/socket/dir``; rebuild it for ``database``."""
    host = server_uri.split("host=", 1)[1].split("&", 1)[0]
    return f"postgresql://postgres@/{database}?host={quote(host, safe='/')}"


def ensure_database(admin_url: str, database: str) -> None:
    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{database}"')
    finally:
        conn.close()


def start(data_dir: Path, database: str = "warehouse") -> str:
    server = _server(data_dir / "pgdata")
    admin = server.get_uri()
    ensure_database(admin, database)
    return socket_url(admin, database)


def stop(data_dir: Path) -> None:
    """Stop the server kept in ``DATA_DIR/pgdata`` (whichever process started it)."""
    import subprocess

    from pgserver._commands import pg_ctl

    pgdata = data_dir / "pgdata"
    if not (pgdata / "postmaster.pid").exists():
        return
    server = _server(pgdata)
    # pgserver stops a server only from the last process holding a handle to it, which the
    # process that started it for Airflow is not: ask pg_ctl, as the server's own user.
    try:
        pg_ctl(["-w", "stop"], pgdata=server.pgdata, user=server.system_user)
    except subprocess.CalledProcessError as error:
        raise RuntimeError(f"could not stop the embedded PostgreSQL in {pgdata}: {error.stderr or error}") from error


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("start", "stop"):
        print("usage: python -m nightly_ml.devtools.embedded start|stop DATA_DIR", file=sys.stderr)
        return 2
    data_dir = Path(argv[2]).resolve()
    if argv[1] == "start":
        print(start(data_dir))
    else:
        stop(data_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
