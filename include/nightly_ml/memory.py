"""Process-wide memory settings for tasks that stream more rows than they hold."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's own starting value


def return_freed_buffers() -> bool:
    """Have glibc's malloc give every block over 128 KiB a mapping of its own, returned to the system when freed.

    glibc starts there, but raises the threshold (up to 32 MiB) each time a mapped block is freed: a process
    that keeps freeing large buffers soon serves them from its heap instead, where they fragment and stay.
    Scoring's peak then grew with the rows it streamed (1M rows: 115-128 MiB, 5M rows: 136-140 MiB); with a
    fixed threshold, 103-107 and 113-115 MiB (a threshold of 1 MiB: 110-113 and 125-130 MiB), for about
    0.2 s more per 1M rows (5 alternating runs each: median 3.36 s against 3.12 s; fresh pages are zeroed by
    the kernel). Not glibc (musl, macOS): nothing to do. Returns
    whether the threshold was set."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
