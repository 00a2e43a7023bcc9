"""A real MLflow tracking server for the integration tests, one per test session.

SQLite backend store and proxied artifacts in a temporary directory, on a free
127.0.0.1 port; ``MLFLOW_TRACKING_URI`` points at it while the session runs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

MLFLOW_BIN = Path(sys.executable).with_name("mlflow")
STARTUP_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:  # noqa: S310 - local test server
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start ``mlflow server``; yield its URL; stop it at the end of the session."""
    from nightly_ml.config import settings

    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = root / "server.log"
    env = {**os.environ, "MLFLOW_ENABLE_TELEMETRY": "false", "DO_NOT_TRACK": "1"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [
                str(MLFLOW_BIN), "server",
                "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                "--serve-artifacts", "--artifacts-destination", str(root / "artifacts"),
                "--host", "127.0.0.1", "--port", str(port),
                "--workers", "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=root,
        )
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not _healthy(url):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait(timeout=10)
            pytest.fail(f"mlflow server did not become healthy at {url}:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.25)

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = url
    settings.cache_clear()
    try:
        yield url
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous
        settings.cache_clear()
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
