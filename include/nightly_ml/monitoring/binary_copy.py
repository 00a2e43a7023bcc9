"""Binary ``COPY ... TO STDOUT`` of fixed-width rows read straight into numpy: the (label, prediction)
pairs of live performance, two NOT NULL float8 fields per row (26 bytes), parsed a block at a time."""

from __future__ import annotations

import numpy as np

_PAIR = np.dtype([("fields", ">i2"), ("n1", ">i4"), ("label", ">f8"), ("n2", ">i4"), ("prediction", ">f8")])
_SIGNATURE = 11 + 4  # PGCOPY signature and flags; then the header extension's length and the extension


class PairSink:
    """A file for ``copy_expert`` that turns a binary COPY of (label, prediction) into arrays, a block at a time."""

    def __init__(self, block_rows: int = 50_000) -> None:
        self._block_bytes = block_rows * _PAIR.itemsize
        self._buffer = bytearray()
        self._header = True
        self._blocks: list[np.ndarray] = []

    def write(self, data: bytes) -> int:
        self._buffer += data
        if self._header and len(self._buffer) >= _SIGNATURE + 4:
            extension = int.from_bytes(self._buffer[_SIGNATURE : _SIGNATURE + 4], "big")
            if len(self._buffer) >= _SIGNATURE + 4 + extension:
                del self._buffer[: _SIGNATURE + 4 + extension]
                self._header = False
        if not self._header and len(self._buffer) >= self._block_bytes:
            self._take()
        return len(data)

    def _take(self) -> None:
        whole = len(self._buffer) // _PAIR.itemsize * _PAIR.itemsize
        self._blocks.append(np.frombuffer(bytes(self._buffer[:whole]), dtype=_PAIR).copy())
        del self._buffer[:whole]

    def pairs(self) -> np.ndarray:
        if self._buffer[-2:] == b"\xff\xff":  # the trailer: a field count of -1
            del self._buffer[-2:]
        self._take()
        if self._buffer:
            raise ValueError(f"labelled pairs: {len(self._buffer)} byte(s) left over in the binary COPY")
        return np.concatenate(self._blocks) if self._blocks else np.empty(0, dtype=_PAIR)
