"""``make up``: the Airflow UI, the MLflow UI and a mail catcher on this machine, on the embedded defaults.

``python -m nightly_ml.devtools.localstack --airflow-port 8080 --mlflow-port 5000 [--host 127.0.0.1]
[--smtp-port 1025 --mail-port 8025] [--dry-run]``

1. the warehouse: ``WAREHOUSE_URL`` if set, else the embedded PostgreSQL in ``<data>/pgdata``
   (its schema migrated either way);
2. MLflow: ``MLFLOW_TRACKING_URI`` if set, else an ``mlflow server`` (SQLite store
   ``<data>/mlflow/mlflow.db``, the file the pipeline uses when no server is given; artifacts
   in ``<data>/mlflow/artifacts``);
3. a mail catcher (``nightly_ml.devtools.mailcatcher``: SMTP, and a web page listing what it caught,
   kept in ``<data>/mail``), unless the alert connection (``AIRFLOW_CONN_SMTP_ALERTS``) is given: the
   alert connection and Airflow's own ``[smtp]`` settings point at it;
4. ``airflow db migrate``, then Airflow's parts in the foreground, as ``airflow standalone`` runs them (API
   server with the UI, scheduler, DAG processor, triggerer; LocalExecutor, simple auth manager), with the
   execution API pointed at the API server (otherwise every task fails with "connection refused").

Everything listens on ``--host`` only, 127.0.0.1 by default. Airflow 3.3 has no setting for the address of
its log servers (the scheduler's and the triggerer's ``serve-logs`` bind every interface), so they are not
started (``--skip-serve-logs``): on one machine the API server reads the task and trigger logs from the log
folder itself.

Ctrl-C stops them all. ``--dry-run`` prints the commands and the environment it would use and starts
nothing. While it runs, its process id is in ``<data>/localstack.pid``; ``--down`` (``make down``) stops that
running stack from another shell, as Ctrl-C would.
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nightly_ml.config import PROJECT_ROOT, settings
from nightly_ml.devtools import mailcatcher
from nightly_ml.devtools.localstack_procs import (  # noqa: F401 (the module's API, used by make down and tests)
    COMMAND_MARK,
    DOWN_TIMEOUT_S,
    down,
    pid_file,
    remove_pid,
    start,
    stop,
    wait_for_http,
    write_pid,
)

# The same switches the Makefile exports, for a run that does not come through `make`.
DEFAULT_ENV = {
    "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_ENABLE_TELEMETRY": "false",
    "DO_NOT_TRACK": "1",
    # what `airflow standalone` would force: tasks run on this machine, users from simple auth
    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
    # the LocalExecutor's workers fork from a server that imported the tasks' libraries once (tasks/preload.py)
    "AIRFLOW__SCHEDULER__MP_START_METHOD": "forkserver",
    "AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD": "nightly_ml.tasks.preload",
    # every queued Asset event reaches a run (Airflow 3.3 loses the newest one: tasks/asset_manager.py)
    "AIRFLOW__CORE__ASSET_MANAGER_CLASS": "nightly_ml.tasks.asset_manager.NewestEventAssetManager",
}
DEFAULT_HOST = "127.0.0.1"
EMBEDDED_WAREHOUSE = "<embedded PostgreSQL, started at run time>"
# Airflow's parts, started in this order and stopped in the reverse one.
AIRFLOW_PARTS = ("api-server", "scheduler", "dag-processor", "triggerer")
MAIL_FROM = "airflow@localhost"


@dataclass
class Plan:
    """What ``make up`` runs: environment additions and the commands, in order."""

    data_dir: Path
    host: str
    env: dict[str, str]
    start_embedded_warehouse: bool
    mlflow_command: list[str] | None
    mail_command: list[str] | None
    migrate_command: list[str]
    airflow_commands: dict[str, list[str]]
    urls: dict[str, str] = field(default_factory=dict)
    # what listens where, all on `host` (name → port)
    ports: dict[str, int] = field(default_factory=dict)


def _tool(name: str) -> str:
    """The venv's own executable when there is one: Airflow's parts must find the same install."""
    sibling = Path(sys.executable).with_name(name)
    return str(sibling) if sibling.exists() else name


def connect_host(host: str) -> str:
    """The address local clients use for a server bound to ``host`` (a wildcard bind answers on loopback)."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "localhost") else f"[{host}]" if ":" in host else host


def browser_host(host: str) -> str:
    """The host name printed for a browser: ``localhost`` for loopback and wildcard binds, else the address."""
    return "localhost" if host in ("127.0.0.1", "::1", "0.0.0.0", "::", "", "localhost") else connect_host(host)


def smtp_env(host: str, port: int, conn_variable: str) -> dict[str, str]:
    """The alert connection and Airflow's own SMTP settings, pointed at a catcher on ``host:port``."""
    address = connect_host(host)
    return {
        conn_variable: f"smtp://{address}:{port}",
        # the SMTP provider's default connection (notifiers): plain SMTP, no TLS
        "AIRFLOW_CONN_SMTP_DEFAULT": f"smtp://{address}:{port}?disable_ssl=true&disable_tls=true",
        "AIRFLOW__SMTP__SMTP_HOST": address,
        "AIRFLOW__SMTP__SMTP_PORT": str(port),
        "AIRFLOW__SMTP__SMTP_STARTTLS": "False",
        "AIRFLOW__SMTP__SMTP_SSL": "False",
        "AIRFLOW__SMTP__SMTP_MAIL_FROM": MAIL_FROM,
    }


def plan(
    airflow_port: int,
    mlflow_port: int,
    environ: Mapping[str, str],
    *,
    host: str = DEFAULT_HOST,
    smtp_port: int = 1025,
    mail_port: int = 8025,
) -> Plan:
    """Work out the stack from the ports, the address to listen on and the environment; starts nothing."""
    data_dir = settings().data_dir
    env: dict[str, str] = {key: value for key, value in DEFAULT_ENV.items() if key not in environ}
    env["NIGHTLY_ML_DATA_DIR"] = str(data_dir)
    env["AIRFLOW_HOME"] = environ.get("AIRFLOW_HOME") or str(data_dir / "airflow")
    venv_bin = str(Path(sys.executable).parent)
    path = environ.get("PATH", "")
    if venv_bin not in path.split(os.pathsep):
        # Airflow starts task and server processes as `airflow` found on PATH
        env["PATH"] = os.pathsep.join(p for p in (venv_bin, path) if p)
    local, browse = connect_host(host), browser_host(host)
    env["AIRFLOW__API__HOST"] = host
    env["AIRFLOW__API__PORT"] = str(airflow_port)
    env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"http://{local}:{airflow_port}/execution/"
    # off by default; if someone turns it on, it listens where the rest does
    env["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST"] = host
    # the addresses a browser uses for the links in mails and task pages: given ones win
    for name, url in (
        ("NIGHTLY_ML_REPORTS_URL", f"http://{browse}:{airflow_port}/nightly-ml/reports"),
        ("NIGHTLY_ML_BASE_URL", f"http://{browse}:{airflow_port}"),
    ):
        if not environ.get(name):
            env[name] = url
    ports = {"Airflow": airflow_port}

    start_embedded = not environ.get("WAREHOUSE_URL")
    env["WAREHOUSE_URL"] = EMBEDDED_WAREHOUSE if start_embedded else environ["WAREHOUSE_URL"]

    mlflow_command = None
    tracking_uri = environ.get("MLFLOW_TRACKING_URI")
    if not tracking_uri:
        store = data_dir / "mlflow"
        tracking_uri = f"http://{local}:{mlflow_port}"
        mlflow_command = [
            _tool("mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{store / 'mlflow.db'}",
            "--artifacts-destination",
            str(store / "artifacts"),
            "--serve-artifacts",
            "--host",
            host,
            "--port",
            str(mlflow_port),
            # one worker is plenty for one person's UI and a few local tasks
            "--workers",
            "1",
        ]
        env["MLFLOW_TRACKING_URI"] = tracking_uri
        ports["MLflow"] = mlflow_port

    mail_command = None
    conn_variable = f"AIRFLOW_CONN_{settings().smtp_conn_id.upper()}"
    if not environ.get(conn_variable):
        mail_command = mailcatcher.command(sys.executable, host, smtp_port, mail_port, data_dir / "mail")
        env.update(
            {key: value for key, value in smtp_env(host, smtp_port, conn_variable).items() if key not in environ}
        )
        ports.update({"mail SMTP": smtp_port, "mail web page": mail_port})

    airflow = _tool("airflow")
    urls = {
        "Airflow UI": f"http://{browse}:{airflow_port}",
        "Nightly ML reports": f"http://{browse}:{airflow_port}/nightly-ml/",
    }
    if mlflow_command:
        urls["MLflow UI"] = f"http://{browse}:{mlflow_port}"
    elif tracking_uri.startswith(("http://", "https://")):
        urls["MLflow UI"] = tracking_uri
    if mail_command:
        urls["Alert mails (mail catcher)"] = f"http://{browse}:{mail_port}/"
    return Plan(
        data_dir=data_dir,
        host=host,
        env=env,
        start_embedded_warehouse=start_embedded,
        mlflow_command=mlflow_command,
        mail_command=mail_command,
        migrate_command=[airflow, "db", "migrate"],
        airflow_commands={
            "api-server": [airflow, "api-server", "--host", host, "--port", str(airflow_port)],
            "scheduler": [airflow, "scheduler", "--skip-serve-logs"],
            "dag-processor": [airflow, "dag-processor"],
            "triggerer": [airflow, "triggerer", "--skip-serve-logs"],
        },
        urls=urls,
        ports=ports,
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
    for background in (stack.mlflow_command, stack.mail_command):
        if background:
            lines.append(shlex.join(background) + " &")
    lines.append(shlex.join(stack.migrate_command))
    lines += [shlex.join(command) + " &" for command in stack.airflow_commands.values()]
    lines.append(f"# listening on {stack.host} only: " + ", ".join(f"{n} :{p}" for n, p in stack.ports.items()))
    lines.append("# then")
    lines += [f"{name}: {url}" for name, url in stack.urls.items()]
    return "\n".join(lines)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(stack: Plan) -> int:
    """Start the stack and stay in the foreground until a part exits, Ctrl-C or SIGTERM (``make down``)."""
    # Also when started in the background, where SIGINT comes in ignored: Ctrl-C and `kill` both end
    # in the `finally` below, which stops the children.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    pid_path = write_pid(stack.data_dir)
    try:
        return _run(stack)
    finally:
        remove_pid(pid_path)


def _run(stack: Plan) -> int:
    from nightly_ml import db
    from nightly_ml.devtools import embedded

    env = {**os.environ, **stack.env}
    if stack.start_embedded_warehouse:
        env["WAREHOUSE_URL"] = embedded.start(stack.data_dir)
        print(f"Embedded PostgreSQL running from {stack.data_dir / 'pgdata'} (`make down` stops it)")
    db.migrate(env["WAREHOUSE_URL"])

    mlflow: subprocess.Popen[bytes] | None = None
    mail: subprocess.Popen[bytes] | None = None
    parts: dict[str, subprocess.Popen[bytes]] = {}
    try:
        if stack.mlflow_command:
            (stack.data_dir / "mlflow" / "artifacts").mkdir(parents=True, exist_ok=True)
            mlflow = start(stack.mlflow_command, env)
        if stack.mail_command:
            mail = start(stack.mail_command, env)
        # migrate while the MLflow server starts: both take several seconds
        subprocess.run(stack.migrate_command, env=env, check=True)
        if mlflow is not None:
            wait_for_http(mlflow, f"{env['MLFLOW_TRACKING_URI']}/health", "mlflow server")
        if mail is not None:
            mail_url = f"http://{connect_host(stack.host)}:{stack.ports['mail web page']}/"
            wait_for_http(mail, mail_url, "mail catcher")
        for name, url in stack.urls.items():
            print(f"{name}: {url}")
        passwords = Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
        print(f"Airflow login: admin; the password is printed below on the first start, and kept in {passwords}")
        for name, command in stack.airflow_commands.items():
            parts[name] = start(command, env)
        return _wait_for_any(parts)
    except KeyboardInterrupt:
        print("\nStopping…", file=sys.stderr)
        return 130
    finally:
        # all of Airflow's parts at once, one SIGTERM each, as `airflow standalone` stops them
        for process in parts.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for name in reversed(list(parts)):
            stop(parts[name], f"airflow {name}", first=None)
        stop(mail, "mail catcher", grace_s=10)
        stop(mlflow, "mlflow server")


def _wait_for_any(parts: dict[str, subprocess.Popen[bytes]]) -> int:
    """Block until one of Airflow's parts exits (then the stack is broken: stop it all)."""
    while True:
        for name, process in parts.items():
            if process.poll() is not None:
                print(f"airflow {name} exited with code {process.returncode}: stopping the stack", file=sys.stderr)
                return process.returncode or 1
        time.sleep(0.5)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m nightly_ml.devtools.localstack", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--airflow-port", type=int, default=8080, help="port of the Airflow API server and UI")
    parser.add_argument("--mlflow-port", type=int, default=5000, help="port of the MLflow server (when one is started)")
    parser.add_argument("--smtp-port", type=int, default=1025, help="SMTP port of the mail catcher")
    parser.add_argument("--mail-port", type=int, default=8025, help="port of the mail catcher's web page")
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help="address every server listens on (default 127.0.0.1: this machine only)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the commands and environment; start nothing")
    parser.add_argument("--down", action="store_true", help="stop the stack running from the data dir (make down)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.down:
        print(down(settings().data_dir))
        return 0
    stack = plan(
        args.airflow_port,
        args.mlflow_port,
        os.environ,
        host=args.host,
        smtp_port=args.smtp_port,
        mail_port=args.mail_port,
    )
    if args.dry_run:
        print(describe(stack))
        return 0
    return run(stack)


if __name__ == "__main__":
    raise SystemExit(main())
