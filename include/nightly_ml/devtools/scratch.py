"""Throw-away databases for tests and benchmarks: create, migrate, point the environment at it, drop.

Shared by ``tests/conftest.py`` and ``scripts/bench.py`` so that both clean up the same way.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from contextlib import contextmanager
from pathlib import Path

import psycopg2

LOCAL_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def reachable(url: str) -> bool:
    try:
        psycopg2.connect(url, connect_timeout=3).close()
    except psycopg2.OperationalError:
        return False
    return True


def database_url(admin_url: str, database: str) -> str:
    """The admin URL with its database swapped (TCP and Unix-socket URLs alike)."""
    head, _, tail = admin_url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{database}" + (f"?{tail}" if tail else "")


def login_url(url: str, user: str, password: str) -> str:
    """``url`` logging in as ``user`` with ``password`` (TCP and Unix-socket URLs alike)."""
    from urllib.parse import quote, urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"))


def admin_execute(admin_url: str, statement: str) -> None:
    """One statement outside a transaction (CREATE/DROP DATABASE need that)."""
    conn = psycopg2.connect(admin_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


@contextmanager
def scratch_database(admin_url: str, name: str, data_dir: Path) -> Generator[str]:
    """A fresh, migrated database; ``WAREHOUSE_URL`` and ``NIGHTLY_ML_DATA_DIR`` point at it (and
    ``settings()`` is refreshed) while the block runs; dropped and the environment restored after."""
    from nightly_ml import db
    from nightly_ml.config import settings

    admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin_execute(admin_url, f'CREATE DATABASE "{name}"')
    url = database_url(admin_url, name)
    previous = {k: os.environ.get(k) for k in ("WAREHOUSE_URL", "NIGHTLY_ML_DATA_DIR")}
    try:
        os.environ["WAREHOUSE_URL"] = url
        os.environ["NIGHTLY_ML_DATA_DIR"] = str(data_dir)
        settings.cache_clear()
        db.migrate(url)
        yield url
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        settings.cache_clear()
        admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    """A TCP port free on the loopback interface now (for servers a test or the bench starts)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def environment_set(name: str, value: str) -> Generator[str]:
    """Set one environment variable the pipeline reads for the duration (tests, replays), then put it back."""
    from nightly_ml.config import settings

    previous = os.environ.get(name)
    os.environ[name] = value
    settings.cache_clear()
    try:
        yield value
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous
        settings.cache_clear()


@contextmanager
def specs_from(spec_dir: Path) -> Generator[Path]:
    """Point the pipeline at another spec directory for the duration, then back."""
    with environment_set("NIGHTLY_ML_SPEC_DIR", str(spec_dir)):
        yield spec_dir
