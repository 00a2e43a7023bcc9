"""What the fault tests share with the child processes they start (and kill): specs, input, the ingest steps,
what the warehouse looks like afterwards, and a poll on something observable.

A child is ``python -c`` importing this module (``spawn``); it prints ``ready`` once imported, optionally waits
for ``go`` on stdin (so that two children start their work at the same moment), runs its step and prints one
JSON line: ``{"ok": true, "result": …}`` or ``{"ok": false, "error": "<Type>: <message>"}``.
"""

from __future__ import annotations

import hashlib
import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import psycopg2
import yaml

FAULTS_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = FAULTS_DIR.parents[1]
START = datetime(2026, 1, 5, tzinfo=UTC)
END = START + timedelta(days=1)
BAD_EVERY = 97  # every 97th row breaks the hour range: quarantined, so quarantine counts are checked too
# Bounds on waiting for something that must happen; never used as synchronisation.
OBSERVE_TIMEOUT_S = 120.0

T = TypeVar("T")


# --------------------------------------------------------------------------- specs and input


def light_spec(name: str, source: dict[str, Any]) -> dict[str, Any]:
    """The demand spec under another name, with a light model and the given source."""
    raw = yaml.safe_load((PROJECT_ROOT / "include" / "specs" / "demand.yaml").read_text())
    raw.update(name=name, source=source)
    raw["validation"]["min_rows"] = 50
    raw["training"].update(
        window_days=3,
        holdout_days=1,
        min_rows=100,
        cv_folds=2,
        schedule=None,
        candidates=[{"name": "ridge", "estimator": "ridge", "search": {"alpha": [1.0]}}],
    )
    return raw


def write_specs(spec_dir: Path, landing: Path, files: list[str], simulated: list[str]) -> None:
    spec_dir.mkdir(parents=True, exist_ok=True)
    for name in files:
        raw = light_spec(name, {"kind": "files", "path": str(landing / name), "wait_hours": 1})
        (spec_dir / f"{name}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    for name in simulated:
        raw = light_spec(name, {"kind": "simulator", "generator": "demand", "seed": 1234, "rows_per_interval": 300})
        (spec_dir / f"{name}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def write_input(dataset: str, rows: int) -> tuple[Path, str]:
    """The interval's raw CSV dropped in the dataset's landing folder: ``rows`` simulated demand rows, every
    ``BAD_EVERY``-th with an out-of-range hour. Returns the file and its sha256."""
    from nightly_ml.etl import simulator, simulator_files, sources
    from nightly_ml.spec import load_spec

    demand = load_spec("demand", PROJECT_ROOT / "include" / "specs")
    frame = simulator.generate_batch(demand, START, END, rows=rows)
    frame.loc[frame.index % BAD_EVERY == 0, "hour"] = 99
    folder = sources.landing_folder(load_spec(dataset), START)
    folder.mkdir(parents=True, exist_ok=True)
    path = Path(str(simulator_files.write_batch(frame, folder / "part-0.csv")))
    return path, sha256(path)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- the ingest steps


def run_ingest(dataset: str, run_id: str) -> dict[str, Any]:
    """extract → stage → validate → merge → archive of the interval, as the DAG's tasks call them."""
    from nightly_ml.tasks import ingest

    files = ingest.extract(dataset, START, END)
    staged = ingest.stage(dataset, START, END, files, run_id)
    validated = ingest.validate(dataset, START, END, staged, run_id, None)
    merged = ingest.merge(dataset, START, END, staged, validated, run_id)
    ingest.finish(dataset, START, staged)
    return merged


def _stall_copy_after(limit: int) -> None:
    """From now on, a raw file read through ``csv_input.open_bytes`` hangs after ``limit`` bytes (a source
    that stops answering mid-file, as a stuck network mount does); header reads are short and unaffected."""
    import threading
    from contextlib import contextmanager

    from nightly_ml.etl import csv_input

    real = csv_input.open_bytes
    never = threading.Event()

    class Stalling:
        def __init__(self, handle: Any) -> None:
            self.handle, self.sent = handle, 0

        def read(self, size: int = -1) -> bytes:
            if self.sent >= limit:
                never.wait()
            chunk = self.handle.read(limit - self.sent if size < 0 else min(size, limit - self.sent))
            self.sent += len(chunk)
            return chunk

        def __getattr__(self, name: str) -> Any:
            return getattr(self.handle, name)

    @contextmanager
    def stalling(path: Any):  # type: ignore[no-untyped-def]
        with real(path) as handle:
            yield Stalling(handle)

    csv_input.open_bytes = stalling  # type: ignore[assignment]


def _promote(dataset: str, version: str, expected: str, actor: str) -> dict[str, Any]:
    from nightly_ml.modeling.promotion import GateDecision
    from nightly_ml.registry import aliases
    from nightly_ml.spec import load_spec

    decision = GateDecision(promote=True, reasons=("passed the gate (fault test).",), primary_delta=0.01)
    outcome = aliases.promote(
        load_spec(dataset), version, decision, expected_champion=expected, actor=actor, reason="race"
    )
    return {"action": outcome.action, "from": outcome.from_version, "to": outcome.to_version, "id": outcome.history_id}


def child_main(argv: list[str]) -> int:
    mode, wait_for_go, args = argv[0], argv[1] == "go", argv[2:]
    if mode == "ingest-stalling-copy":
        _stall_copy_after(int(args.pop()))
        mode = "ingest"
    print("ready", flush=True)
    if wait_for_go and sys.stdin.readline().strip() != "go":
        return 2
    try:
        result = run_ingest(*args) if mode == "ingest" else _promote(*args)
    except Exception as error:  # noqa: BLE001 — reported to the test, which judges it
        print(json.dumps({"ok": False, "error": f"{type(error).__name__}: {error}"}), flush=True)
        return 1
    print(json.dumps({"ok": True, "result": result}, default=str), flush=True)
    return 0


# --------------------------------------------------------------------------- child processes


class Child:
    """One child process running a step; its stdout is read line by line."""

    def __init__(self, mode: str, *args: str, wait_for_go: bool = False) -> None:
        code = f"import sys; sys.path.insert(0, {str(FAULTS_DIR)!r}); import fault_support as f; "
        code += "sys.exit(f.child_main(sys.argv[1:]))"
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, mode, "go" if wait_for_go else "now", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
            cwd=PROJECT_ROOT,
        )

    def _line(self, deadline: float) -> str:
        assert self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while True:
                if selector.select(timeout=max(0.0, deadline - time.monotonic())):
                    line = self.process.stdout.readline()
                    if line or self.process.poll() is not None:
                        return line
                if time.monotonic() > deadline:
                    raise AssertionError(f"child {self.process.args[3:]} said nothing in time:\n{self.stderr_tail()}")

    def ready(self) -> None:
        line = self._line(time.monotonic() + OBSERVE_TIMEOUT_S)
        assert line.strip() == "ready", f"child did not start: {line!r}\n{self.stderr_tail()}"

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def outcome(self, timeout: float = 300.0) -> dict[str, Any]:
        """The child's result line (other output, such as ``ready``, skipped), after it exited."""
        deadline = time.monotonic() + timeout
        line = "ready"
        while line and not line.startswith('{"ok"'):
            line = self._line(deadline)
        self.process.wait(timeout=timeout)
        assert line, f"child exited {self.process.returncode} without a result:\n{self.stderr_tail()}"
        return json.loads(line)

    def kill(self) -> None:
        self.process.kill()  # SIGKILL
        self.process.wait(timeout=30)

    def stderr_tail(self) -> str:
        if self.process.poll() is None or self.process.stderr is None:
            return "(still running)"
        return self.process.stderr.read()[-4000:]


def wait_until(found: Callable[[], T | None], what: str, timeout: float = OBSERVE_TIMEOUT_S) -> T:
    """Poll ``found`` (a query of something observable) until it returns a value; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = found()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"never observed: {what}")
        time.sleep(0.02)


def query(url: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall()
    finally:
        conn.close()


# --------------------------------------------------------------------------- what the warehouse holds


def warehouse_state(url: str, dataset: str) -> dict[str, Any]:
    """The interval in the warehouse and the ops tables, for comparing with one clean run."""
    from psycopg2 import sql

    from nightly_ml import db
    from nightly_ml.spec import load_spec

    spec = load_spec(dataset)
    table = db.warehouse_table(spec)
    key = sql.Identifier(spec.key.name)
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                sql.SQL(
                    "SELECT count(*), count(DISTINCT {key}), md5(string_agg(_row_hash, '' ORDER BY {key})), "
                    "count(*) FILTER (WHERE _interval_start <> %(start)s) FROM {table}"
                ).format(key=key, table=table),
                {"start": START},
            )
            rows, keys, checksum, elsewhere = cur.fetchone()
            cur.execute(
                "SELECT status, run_id, rows_in, rows_merged, rows_quarantined, checksum FROM ops.load_audit "
                "WHERE dataset = %s ORDER BY interval_start",
                (dataset,),
            )
            audit = cur.fetchall()
            cur.execute(
                "SELECT run_id, count(*), count(DISTINCT staging_row_id) FROM ops.quarantine "
                "WHERE dataset = %s GROUP BY run_id ORDER BY run_id",
                (dataset,),
            )
            quarantine = cur.fetchall()
            cur.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'staging' AND tablename LIKE %s ORDER BY 1",
                (f"{dataset}\\_\\_%",),
            )
            staging = [row[0] for row in cur.fetchall()]
    finally:
        conn.close()
    return {
        "rows": rows,
        "distinct_keys": keys,
        "checksum": checksum,
        "rows_elsewhere": elsewhere,
        "audit": audit,
        "quarantine": quarantine,
        "staging_tables": staging,
    }


def raw_input_places(dataset: str) -> dict[str, list[str]]:
    """The interval's raw files in the landing folder and in the archive."""
    from nightly_ml.etl import sources
    from nightly_ml.spec import load_spec

    spec = load_spec(dataset)
    found: dict[str, list[str]] = {}
    for place, folder in (
        ("landing", sources.landing_folder(spec, START)),
        ("archive", sources.archive_folder(spec, START)),
    ):
        path = Path(str(folder))
        found[place] = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    return found


def archived_file(dataset: str) -> Path:
    from nightly_ml.etl import sources
    from nightly_ml.spec import load_spec

    return Path(str(sources.archive_folder(load_spec(dataset), START))) / "part-0.csv"


# --------------------------------------------------------------------------- a private MLflow server


def start_mlflow(root: Path, port: int) -> subprocess.Popen[bytes]:
    """``mlflow server`` on 127.0.0.1:``port`` with its store under ``root`` (restartable on the same store)."""
    import urllib.error
    import urllib.request

    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_ENABLE_TELEMETRY": "false", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    command = [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--workers", "1"]
    command += ["--serve-artifacts", "--artifacts-destination", str(root / "artifacts")]
    with (root / "server.log").open("ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True
        )

    def healthy() -> bool:
        assert process.poll() is None, (root / "server.log").read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    wait_until(healthy, f"mlflow server healthy at {url}")
    return process


def stop_mlflow(process: subprocess.Popen[bytes]) -> None:
    """Stop the server and its workers (its own process group)."""
    import signal

    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


ROWS = 10_000  # ~1 MiB of CSV


@dataclass(frozen=True)
class FaultWorld:
    spec_dir: Path
    landing: Path
    warehouse_url: str


def comparable(state: dict[str, Any]) -> dict[str, Any]:
    """The parts of a state that must equal the clean run's, whichever run wrote them."""
    [(status, _run, rows_in, merged, quarantined, checksum)] = state["audit"]
    return {
        "rows": state["rows"],
        "distinct_keys": state["distinct_keys"],
        "checksum": state["checksum"],
        "rows_elsewhere": state["rows_elsewhere"],
        "audit": (status, rows_in, merged, quarantined, checksum),
        "quarantined": sorted((count, distinct) for _run, count, distinct in state["quarantine"]),
        "staging_tables": state["staging_tables"],
    }


def dag_of(dag_file: str, dag_id: str) -> Any:
    """Parse one DAG file now (default args follow the environment as it is now) and return one DAG."""
    from airflow.dag_processing.dagbag import DagBag

    from nightly_ml.config import PROJECT_ROOT, settings

    settings.cache_clear()
    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags" / dag_file))
    assert bag.import_errors == {}, bag.import_errors
    return bag.dags[dag_id]
