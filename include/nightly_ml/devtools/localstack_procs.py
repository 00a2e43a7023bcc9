"""The processes of ``make up`` (nightly_ml.devtools.localstack): start, wait, stop, and ``make down``.

Each child runs in a process group of its own: Ctrl-C reaches only the stack's parent, which stops each
child once, in reverse order. While a stack runs, its process id is in ``<data>/localstack.pid``; ``make down``
finds it there and stops it as Ctrl-C would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

PID_FILE = "localstack.pid"
# What a running stack's command line holds: a recycled pid of another program is never signalled.
COMMAND_MARK = "nightly_ml.devtools.localstack"
# The stack stops its children within 60 s + 10 s each (see stop); then give up waiting.
DOWN_TIMEOUT_S = 300.0
READY_TIMEOUT_S = 60.0


def start(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # A process group of its own: Ctrl-C reaches only us, and each child gets exactly one stop signal
    # from us; Airflow's components deadlock on SIGINT + SIGTERM.
    return subprocess.Popen(command, env=env, process_group=0)


def stop(
    process: subprocess.Popen[bytes] | None, name: str, grace_s: float = 60.0, first: int | None = signal.SIGINT
) -> None:
    """Stop a child with one signal (SIGINT, as Ctrl-C would; ``None``: it has had its signal already), then
    SIGTERM if that was SIGINT, then SIGKILL; then whatever it left behind in its process group (task
    processes, server workers)."""
    if process is None:
        return
    if process.poll() is None:
        if first is not None:
            process.send_signal(first)
        escalations = [process.terminate] if first == signal.SIGINT else []
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            for escalate in [*escalations, process.kill]:
                print(f"{name} is still running: {escalate.__name__}", file=sys.stderr)
                escalate()
                try:
                    process.wait(timeout=10.0)
                    break
                except subprocess.TimeoutExpired:
                    continue
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def wait_for_http(process: subprocess.Popen[bytes], url: str, name: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Wait until ``url`` answers (any HTTP status), or fail when the process exits or the time is up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise RuntimeError(f"{name} did not answer on {url} within {timeout_s:.0f} s")


def pid_file(data_dir: Path) -> Path:
    return data_dir / PID_FILE


def is_stack(pid: int) -> bool:
    """Whether ``pid`` is a live process running the stack (not a recycled pid of something else)."""
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
    ``finally`` stops Airflow, the MLflow server and the mail catcher. Returns what happened, in a sentence."""
    path = pid_file(data_dir)
    try:
        pid = int(path.read_text().strip())
    except FileNotFoundError:
        return f"no local stack is running from {data_dir} (no {path.name})"
    except ValueError:
        path.unlink(missing_ok=True)
        return f"removed an unreadable {path}; no local stack stopped"
    if not is_stack(pid):
        path.unlink(missing_ok=True)
        return f"the local stack of {path} (pid {pid}) is not running; removed the stale pid file"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while is_stack(pid):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the local stack (pid {pid}) did not stop within {timeout_s:.0f} s; stop it by hand")
        time.sleep(0.2)
    path.unlink(missing_ok=True)
    return f"stopped the local stack (pid {pid}): Airflow, the MLflow server and the mail catcher it started"


def write_pid(data_dir: Path) -> Path:
    path = pid_file(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{os.getpid()}\n")
    return path


def remove_pid(path: Path) -> None:
    try:
        if path.read_text().strip() == str(os.getpid()):
            path.unlink()
    except FileNotFoundError:
        pass
