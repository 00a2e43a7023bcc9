"""`make down`: the running `make up` stack is found by its pid file and stopped as Ctrl-C would stop it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nightly_ml.devtools import localstack

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 30.0

# A stand-in for a running stack: SIGTERM ends it through its own handler (as localstack's `finally`
# stops its children), after it said it is ready; its command line carries the module's name.
FAKE_STACK = """
import signal, sys, time
from pathlib import Path
out = Path(sys.argv[1])
def stop(signum, frame):
    out.with_suffix(".stopped").write_text(signal.Signals(signum).name)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
out.with_suffix(".ready").write_text("ready")
time.sleep(120)
"""


@pytest.fixture
def fake_stack(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    marker = tmp_path / "stack"
    process = subprocess.Popen([sys.executable, "-c", FAKE_STACK, str(marker), localstack.COMMAND_MARK])
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not marker.with_suffix(".ready").exists():
        assert process.poll() is None and time.monotonic() < deadline, "the fake stack did not start"
        time.sleep(0.05)
    yield process
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)


def test_down_stops_the_running_stack_and_removes_its_pid_file(
    tmp_path: Path, fake_stack: subprocess.Popen[bytes]
) -> None:
    localstack.pid_file(tmp_path).write_text(f"{fake_stack.pid}\n")
    said = localstack.down(tmp_path, timeout_s=30)
    assert fake_stack.wait(timeout=10) == 0
    assert (tmp_path / "stack.stopped").read_text() == "SIGTERM"
    assert not localstack.pid_file(tmp_path).exists()
    assert f"stopped the local stack (pid {fake_stack.pid})" in said


def test_down_without_a_stack_says_so(tmp_path: Path) -> None:
    assert "no local stack is running" in localstack.down(tmp_path)


def test_a_stale_pid_file_is_removed(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=10)
    localstack.pid_file(tmp_path).write_text(f"{gone.pid}\n")
    assert "is not running; removed the stale pid file" in localstack.down(tmp_path)
    assert not localstack.pid_file(tmp_path).exists()


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc to tell processes apart")
def test_a_recycled_pid_of_another_program_is_never_signalled(tmp_path: Path) -> None:
    other = subprocess.Popen(["sleep", "60"])
    try:
        localstack.pid_file(tmp_path).write_text(f"{other.pid}\n")
        assert "is not running" in localstack.down(tmp_path)
        time.sleep(0.2)
        assert other.poll() is None, "an unrelated process was signalled"
    finally:
        other.kill()
        other.wait(timeout=10)


def test_run_keeps_its_pid_file_while_it_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def foreground(stack: localstack.Plan) -> int:
        seen.append(localstack.pid_file(stack.data_dir).read_text().strip())
        return 0

    monkeypatch.setattr(localstack, "_run", foreground)
    stack = localstack.Plan(
        data_dir=tmp_path,
        host="127.0.0.1",
        env={},
        start_embedded_warehouse=False,
        mlflow_command=None,
        mail_command=None,
        migrate_command=[],
        airflow_commands={},
    )
    # run() installs its own SIGINT/SIGTERM handlers: put pytest's back afterwards.
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert localstack.run(stack) == 0
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert seen == [str(os.getpid())]
    assert not localstack.pid_file(tmp_path).exists()


def test_makefile_down_stops_the_stack_and_the_embedded_postgresql() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^\.PHONY:.*\bdown\b", makefile, re.MULTILINE), "down is not in .PHONY"
    recipe = re.search(r"^down:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe, "no `down` target in the Makefile"
    lines = recipe.group(1)
    assert "-m nightly_ml.devtools.localstack --down" in lines
    assert localstack.parse_args(["--down"]).down
    assert "-m nightly_ml.devtools.embedded stop $(DATA_DIR)" in lines
