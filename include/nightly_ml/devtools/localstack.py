"""``make up``: the Airflow UI and the MLflow UI on this machine, on the embedded defaults.

``python -m nightly_ml.devtools.localstack --airflow-port 8080 --mlflow-port 5000 [--dry-run]``

1. the warehouse: ``WAREHOUSE_URL`` if set, else the embedded PostgreSQL in ``<data>/pgdata``
   (its schema migrated either way);
2. MLflow: ``MLFLOW_TRACKING_URI`` if set, else an ``mlflow server`` on 127.0.0.1 (SQLite store
   ``<data>/mlflow/mlflow.db``, the file the pipeline uses when no server is given; artifacts
   in ``<data>/mlflow/artifacts``);
3. ``airflow db migrate``, then ``airflow standalone`` in the foreground, with the API server on
   the given port and the execution API pointed at it (otherwise every task fails with
   "connection refused").

Ctrl-C stops Airflow and the MLflow server. ``--dry-run`` prints the commands and the
environment it would use and starts nothing. While it runs, its process id is in ``<data>/localstack.pid``;
``--down`` (``make down``) stops that running stack from another shell, as Ctrl-C would.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nightly_ml.config import PROJECT_ROOT, settings

# The same switches the Makefile exports, for a run that does not come through `make`.
DEFAULT_ENV = {
    "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_ENABLE_TELEMETRY": "false",
    "DO_NOT_TRACK": "1",
}
EMBEDDED_WAREHOUSE = "<embedded PostgreSQL, started at run time>"
MLFLOW_START_TIMEOUT_S = 60.0
PID_FILE = "localstack.pid"
# What a running stack's command line holds: a recycled pid of another program is never signalled.
COMMAND_MARK = "nightly_ml.devtools.localstack"
# The stack stops its children within 60 s + 10 s each (see _stop); then give up waiting.
DOWN_TIMEOUT_S = 150.0


@dataclass
class Plan:
    """What ``make up`` runs: environment additions and the commands, in order."""

    data_dir: Path
    env: dict[str, str]
    start_embedded_warehouse: bool
    mlflow_command: list[str] | None
    migrate_command: list[str]
    standalone_command: list[str]
    urls: dict[str, str] = field(default_factory=dict)


def _tool(name: str) -> str:
    """The venv's own executable when there is one: `airflow standalone` must find the same install."""
    sibling = Path(sys.executable).with_name(name)
    return str(sibling) if sibling.exists() else name


def plan(airflow_port: int, mlflow_port: int, environ: Mapping[str, str]) -> Plan:
    """Work out the stack from the ports and the environment; starts nothing."""
    data_dir = settings().data_dir
    env: dict[str, str] = {key: value for key, value in DEFAULT_ENV.items() if key not in environ}
    env["NIGHTLY_ML_DATA_DIR"] = str(data_dir)
    env["AIRFLOW_HOME"] = environ.get("AIRFLOW_HOME") or str(data_dir / "airflow")
    venv_bin = str(Path(sys.executable).parent)
    path = environ.get("PATH", "")
    if venv_bin not in path.split(os.pathsep):
        # `airflow standalone` starts its parts as `airflow` found on PATH
        env["PATH"] = os.pathsep.join(p for p in (venv_bin, path) if p)
    env["AIRFLOW__API__PORT"] = str(airflow_port)
    env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"http://localhost:{airflow_port}/execution/"
    env.setdefault("NIGHTLY_ML_REPORTS_URL", f"http://localhost:{airflow_port}/nightly-ml/reports")
    env.setdefault("NIGHTLY_ML_BASE_URL", f"http://localhost:{airflow_port}")

    start_embedded = not environ.get("WAREHOUSE_URL")
    env["WAREHOUSE_URL"] = EMBEDDED_WAREHOUSE if start_embedded else environ["WAREHOUSE_URL"]

    mlflow_command = None
    tracking_uri = environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        store = data_dir / "mlflow"
        tracking_uri = f"http://127.0.0.1:{mlflow_port}"
        mlflow_command = [
            _tool("mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{store / 'mlflow.db'}",
            "--artifacts-destination",
            str(store / "artifacts"),
            "--serve-artifacts",
            "--host",
            "127.0.0.1",
            "--port",
            str(mlflow_port),
            # one worker is plenty for one person's UI and a few local tasks
            "--workers",
            "1",
        ]
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    airflow = _tool("airflow")
    urls = {
        "Airflow UI": f"http://localhost:{airflow_port}",
        "Nightly ML reports": f"http://localhost:{airflow_port}/nightly-ml/",
    }
    if tracking_uri.startswith(("http://", "https://")):
        urls["MLflow UI"] = tracking_uri
    return Plan(
        data_dir=data_dir,
        env=env,
        start_embedded_warehouse=start_embedded,
        mlflow_command=mlflow_command,
        migrate_command=[airflow, "db", "migrate"],
        standalone_command=[airflow, "standalone"],
        urls=urls,
    )


def mask(value: str) -> str:
    """Hide the password of a URL (``scheme://user:secret@host`` → ``scheme://user:***@host``)."""
    return re.sub(r"(://[^:/@\s]+:)[^@\s]+@", r"\1***@", value)


def describe(stack: Plan) -> str:
    """The dry-run listing: environment, then commands, then where the UIs will be."""
    lines = ["# environment"]
    lines += [f"{key}={shlex.quote(mask(value))}" for key, value in sorted(stack.env.items())]
    lines.append("# commands")
    if stack.start_embedded_warehouse:
        lines.append(f"# start the embedded PostgreSQL in {stack.data_dir / 'pgdata'} and export its WAREHOUSE_URL")
    lines.append("# migrate the warehouse schema (nightly_ml.db.migrate)")
    if stack.mlflow_command:
        lines.append(shlex.join(stack.mlflow_command) + " &")
    lines.append(shlex.join(stack.migrate_command))
    lines.append(shlex.join(stack.standalone_command))
    lines.append("# then")
    lines += [f"{name}: {url}" for name, url in stack.urls.items()]
    return "\n".join(lines)


def _wait_for_mlflow(process: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + MLFLOW_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with code {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise RuntimeError(f"mlflow server did not answer on {url}/health within {MLFLOW_START_TIMEOUT_S:.0f} s")


def _start(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # A process group of its own: Ctrl-C reaches only us, and each child gets exactly one stop signal
    # from us (airflow standalone then stops its parts); its components deadlock on SIGINT + SIGTERM.
    return subprocess.Popen(command, env=env, process_group=0)


def _stop(process: subprocess.Popen[bytes] | None, name: str, grace_s: float = 60.0) -> None:
    """Stop a child as Ctrl-C would (SIGINT), then with SIGTERM, then SIGKILL."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    for escalate, wait_s in ((None, grace_s), (process.terminate, 10.0), (process.kill, None)):
        if escalate is not None:
            print(f"{name} is still running: {escalate.__name__}", file=sys.stderr)
            escalate()
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def pid_file(data_dir: Path) -> Path:
    return data_dir / PID_FILE


def _is_stack(pid: int) -> bool:
    """Whether ``pid`` is a live process running this module (not a recycled pid of something else)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # alive, but not ours to stop
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.parent.exists():
        return True  # no /proc to check against (not Linux): trust the pid file
    try:
        return COMMAND_MARK in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False


def down(data_dir: Path, timeout_s: float = DOWN_TIMEOUT_S) -> str:
    """Stop the stack ``make up`` runs from ``data_dir`` (found by its pid file) as Ctrl-C would: its
    ``finally`` stops Airflow and the MLflow server. Returns what happened, in a sentence."""
    path = pid_file(data_dir)
    try:
        pid = int(path.read_text().strip())
    except FileNotFoundError:
        return f"no local stack is running from {data_dir} (no {path.name})"
    except ValueError:
        path.unlink(missing_ok=True)
        return f"removed an unreadable {path}; no local stack stopped"
    if not _is_stack(pid):
        path.unlink(missing_ok=True)
        return f"the local stack of {path} (pid {pid}) is not running; removed the stale pid file"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _is_stack(pid):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the local stack (pid {pid}) did not stop within {timeout_s:.0f} s; stop it by hand")
        time.sleep(0.2)
    path.unlink(missing_ok=True)
    return f"stopped the local stack (pid {pid}): Airflow and the MLflow server it started"


def _write_pid(data_dir: Path) -> Path:
    path = pid_file(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{os.getpid()}\n")
    return path


def _remove_pid(path: Path) -> None:
    try:
        if path.read_text().strip() == str(os.getpid()):
            path.unlink()
    except FileNotFoundError:
        pass


def run(stack: Plan) -> int:
    """Start the stack and stay in the foreground until Airflow exits, Ctrl-C or SIGTERM (``make down``)."""
    # Also when started in the background, where SIGINT comes in ignored: Ctrl-C and `kill` both end
    # in the `finally` below, which stops the children.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    pid_path = _write_pid(stack.data_dir)
    try:
        return _run(stack)
    finally:
        _remove_pid(pid_path)


def _run(stack: Plan) -> int:
    from nightly_ml import db
    from nightly_ml.devtools import embedded

    env = {**os.environ, **stack.env}
    if stack.start_embedded_warehouse:
        env["WAREHOUSE_URL"] = embedded.start(stack.data_dir)
        print(f"Embedded PostgreSQL running from {stack.data_dir / 'pgdata'} (`make down` stops it)")
    db.migrate(env["WAREHOUSE_URL"])

    mlflow: subprocess.Popen[bytes] | None = None
    standalone: subprocess.Popen[bytes] | None = None
    try:
        if stack.mlflow_command:
            (stack.data_dir / "mlflow" / "artifacts").mkdir(parents=True, exist_ok=True)
            mlflow = _start(stack.mlflow_command, env)
        # migrate while the MLflow server starts: both take several seconds
        subprocess.run(stack.migrate_command, env=env, check=True)
        if mlflow is not None:
            _wait_for_mlflow(mlflow, env["MLFLOW_TRACKING_URI"])
        for name, url in stack.urls.items():
            print(f"{name}: {url}")
        passwords = Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
        print(f"Airflow login: admin; the password is printed below on the first start, and kept in {passwords}")
        standalone = _start(stack.standalone_command, env)
        return standalone.wait()
    except KeyboardInterrupt:
        print("\nStopping…", file=sys.stderr)
        return 130
    finally:
        _stop(standalone, "airflow standalone")
        _stop(mlflow, "mlflow server")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m nightly_ml.devtools.localstack", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--airflow-port", type=int, default=8080, help="port of the Airflow API server and UI")
    parser.add_argument("--mlflow-port", type=int, default=5000, help="port of the MLflow server (when one is started)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and environment; start nothing")
    parser.add_argument("--down", action="store_true", help="stop the stack running from the data dir (make down)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.down:
        print(down(settings().data_dir))
        return 0
    stack = plan(args.airflow_port, args.mlflow_port, os.environ)
    if args.dry_run:
        print(describe(stack))
        return 0
    return run(stack)


if __name__ == "__main__":
    raise SystemExit(main())
