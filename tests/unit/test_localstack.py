"""`make up` (nightly_ml.devtools.localstack): the plan it prints, the Makefile's call, and how it stops children."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nightly_ml.devtools import localstack

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from nightly_ml.config import settings

    monkeypatch.setenv("NIGHTLY_ML_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("WAREHOUSE_URL", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings.cache_clear()
    yield tmp_path.resolve()
    settings.cache_clear()


@pytest.fixture
def nothing_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"--dry-run started something: {args}")

    from nightly_ml.devtools import embedded

    monkeypatch.setattr(localstack.subprocess, "Popen", refuse)
    monkeypatch.setattr(localstack.subprocess, "run", refuse)
    monkeypatch.setattr(embedded, "start", refuse)


def test_dry_run_prints_the_plan_and_starts_nothing(
    data_dir: Path, nothing_starts: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert localstack.main(["--airflow-port", "8081", "--mlflow-port", "5001", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "AIRFLOW__API__PORT=8081" in out
    # without it every task fails with "connection refused" on a port other than 8080
    assert "AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:8081/execution/" in out
    assert f"NIGHTLY_ML_DATA_DIR={data_dir}" in out
    assert "MLFLOW_TRACKING_URI=http://127.0.0.1:5001" in out
    assert f"start the embedded PostgreSQL in {data_dir / 'pgdata'}" in out
    mlflow = next(line for line in out.splitlines() if " server " in line)
    assert f"--backend-store-uri sqlite:///{data_dir / 'mlflow' / 'mlflow.db'}" in mlflow
    assert f"--artifacts-destination {data_dir / 'mlflow' / 'artifacts'}" in mlflow
    assert "--serve-artifacts" in mlflow and "--host 127.0.0.1 --port 5001" in mlflow
    commands = [line.split(" ") for line in out.splitlines() if Path(line.split(" ")[0]).name == "airflow"]
    # Airflow's parts as `airflow standalone` runs them, but with no log servers (they cannot be bound to
    # 127.0.0.1 in Airflow 3.3) and the API server on the chosen address
    assert [words[1:] for words in commands] == [
        ["db", "migrate"],
        ["api-server", "--host", "127.0.0.1", "--port", "8081", "&"],
        ["scheduler", "--skip-serve-logs", "&"],
        ["dag-processor", "&"],
        ["triggerer", "--skip-serve-logs", "&"],
    ]
    assert "Airflow UI: http://localhost:8081" in out and "Nightly ML reports: http://localhost:8081/nightly-ml/" in out


def test_given_services_are_used_not_started(
    data_dir: Path, nothing_starts: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WAREHOUSE_URL", "postgresql://etl:hunter2@db.internal:5432/warehouse")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    stack = localstack.plan(8080, 5000, dict(localstack.os.environ))
    assert not stack.start_embedded_warehouse and stack.mlflow_command is None
    assert "MLFLOW_TRACKING_URI" not in stack.env
    assert stack.urls["MLflow UI"] == "http://mlflow.internal:5000"
    localstack.main(["--dry-run"])
    out = capsys.readouterr().out
    assert "hunter2" not in out and "postgresql://etl:***@db.internal:5432/warehouse" in out
    assert " server " not in out and "embedded" not in out


def test_the_children_find_this_venv(data_dir: Path) -> None:
    stack = localstack.plan(8080, 5000, {"PATH": "/usr/bin"})
    # `airflow standalone` starts its parts as `airflow` found on PATH
    assert stack.env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    for command in stack.airflow_commands.values():
        assert Path(command[0]).parent == Path(sys.executable).parent
    assert stack.env["AIRFLOW__CORE__DAGS_FOLDER"] == str(ROOT / "dags")
    assert stack.env["AIRFLOW__CORE__PLUGINS_FOLDER"] == str(ROOT / "plugins")
    assert stack.env["AIRFLOW_HOME"] == str(data_dir / "airflow")


def test_makefile_up_calls_it_with_options_it_has() -> None:
    makefile = (ROOT / "Makefile").read_text()
    defaults = dict(re.findall(r"^(\w+) \?= (\S+)$", makefile, re.MULTILINE))
    recipe = re.search(r"^up:.*\n\t(.+)$", makefile, re.MULTILINE)
    assert recipe, "no `up` target in the Makefile"
    command = re.sub(r"\$\((\w+)\)", lambda m: defaults.get(m.group(1), m.group(0)), recipe.group(1)).split()
    assert command[1:3] == ["-m", "nightly_ml.devtools.localstack"]
    args = localstack.parse_args(command[3:])
    assert (args.airflow_port, args.mlflow_port, args.dry_run) == (8080, 5000, False)
    assert (args.host, args.smtp_port, args.mail_port) == ("127.0.0.1", 1025, 8025)


def test_mask_hides_url_passwords() -> None:
    assert localstack.mask("postgresql://u:p%40ss@h/db") == "postgresql://u:***@h/db"
    assert (
        localstack.mask("postgresql://postgres@/warehouse?host=/tmp/x")
        == "postgresql://postgres@/warehouse?host=/tmp/x"
    )


def child(code: str, *, ignore_sigint: bool = False, announces_itself: bool = False) -> subprocess.Popen[bytes]:
    """A Python child with a known SIGINT disposition (a background shell starts children with SIGINT
    ignored) that has said it is ready, so no signal arrives before its handler is in place.

    Code that catches the interrupt says 'ready' itself, inside its ``try``: a signal that came
    between a 'ready' printed before the ``try`` and the ``try`` would kill it uncaught."""
    handler = "signal.SIG_IGN" if ignore_sigint else "signal.default_int_handler"
    ready = "" if announces_itself else "print('ready', flush=True)\n"
    script = f"import signal\nsignal.signal(signal.SIGINT, {handler})\n{ready}{code}"
    process = subprocess.Popen([sys.executable, "-c", script], process_group=0, stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline().strip() == b"ready"
    return process


def test_stop_sends_sigint_first() -> None:
    process = child(
        "import time\ntry:\n    print('ready', flush=True)\n    time.sleep(60)\n"
        "except KeyboardInterrupt:\n    raise SystemExit(7)",
        announces_itself=True,
    )
    localstack.stop(process, "child", grace_s=10)
    assert process.returncode == 7


def test_stop_escalates_when_sigint_is_ignored() -> None:
    process = child("import time; time.sleep(60)", ignore_sigint=True)
    started = time.monotonic()
    localstack.stop(process, "child", grace_s=0.5)
    assert process.returncode is not None and time.monotonic() - started < 10
