"""memory.return_freed_buffers: glibc's mmap threshold fixed at its starting value, nothing elsewhere."""

from __future__ import annotations

import ctypes.util
from typing import Any

import pytest

from nightly_ml import memory


class FakeLibc:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def mallopt(self, parameter: int, value: int) -> int:
        self.calls.append((parameter, value))
        return 1


def test_the_threshold_is_fixed_at_128_kib_on_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    libc = FakeLibc()
    monkeypatch.setattr(memory.sys, "platform", "linux")
    monkeypatch.setattr(memory.ctypes, "CDLL", lambda name: libc)
    assert memory.return_freed_buffers()
    assert libc.calls == [(-3, 128 * 1024)]  # M_MMAP_THRESHOLD in glibc's malloc.h


@pytest.mark.parametrize("platform", ["darwin", "win32"])
def test_nothing_is_called_elsewhere(platform: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_libc(name: Any) -> None:
        raise AssertionError("libc must not be loaded")

    monkeypatch.setattr(memory.sys, "platform", platform)
    monkeypatch.setattr(memory.ctypes, "CDLL", no_libc)
    assert not memory.return_freed_buffers()


def test_a_libc_without_mallopt_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory.sys, "platform", "linux")
    monkeypatch.setattr(memory.ctypes, "CDLL", lambda name: object())
    assert not memory.return_freed_buffers()


@pytest.mark.skipif(not memory.sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_glibc_here_accepts_it() -> None:
    assert ctypes.util.find_library("c") is not None
    assert memory.return_freed_buffers()  # mallopt returned 1
