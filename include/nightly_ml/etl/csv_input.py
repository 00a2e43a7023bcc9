"""Reading raw CSV files as the loader needs them: gzip or plain, record by record with the raw text kept.

The fast path hands the (decompressed) bytes to ``COPY``; when ``COPY`` refuses a file, the
loader walks it record by record with :func:`records`, which uses the standard ``csv`` parser (so
quoted fields may hold delimiters, quotes and newlines) and keeps each record's raw text, for the
quarantine, and the number of its first line.
"""

from __future__ import annotations

import csv
import gzip
import zlib
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import PurePath
from typing import BinaryIO

GZIP_MAGIC = b"\x1f\x8b"
# What a damaged or truncated gzip stream raises while it is read.
DECOMPRESS_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)
# PostgreSQL's limit for one field (1 GB); Python's csv module stops at 128 KiB by default.
MAX_FIELD_CHARS = 1 << 30


def gzip_message(path: PurePath, error: Exception) -> str:
    """The rejection for a gzip file that cannot be read to its end."""
    return (
        f"{path.name}: cannot decompress the gzip file ({error or type(error).__name__}); "
        "it is damaged or was cut short: drop the complete file again"
    )


def is_gzip(path: PurePath) -> bool:
    """Whether the file is gzip-compressed, by its magic number (whatever its name says)."""
    with path.open("rb") as handle:  # type: ignore[attr-defined]
        return bool(handle.read(2) == GZIP_MAGIC)


@contextmanager
def open_bytes(path: PurePath) -> Generator[BinaryIO]:
    """The file's bytes, decompressed if it is gzip (a local path or any storage path with ``open``)."""
    with path.open("rb") as handle:  # type: ignore[attr-defined]
        compressed = handle.read(2) == GZIP_MAGIC
        handle.seek(0)
        if not compressed:
            yield handle
            return
        with gzip.GzipFile(fileobj=handle, mode="rb") as unpacked:
            yield unpacked  # type: ignore[misc]


def first_line(path: PurePath) -> bytes:
    with open_bytes(path) as handle:
        return handle.readline()


@dataclass(frozen=True)
class Record:
    """One CSV record after the header: its first line's number, raw text, and fields or what is wrong."""

    line_number: int
    raw: str
    fields: list[str]
    rule: str | None = None
    detail: str = ""

    @property
    def printable(self) -> str:
        """The raw text as PostgreSQL can store it (bytes that are not UTF-8 and NULs escaped)."""
        text = self.raw.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="backslashreplace")
        return text.replace("\x00", "\\x00").rstrip("\r\n")


def _problem(raw: str) -> tuple[str, str] | None:
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError as error:  # surrogate escapes: bytes that were not UTF-8
        at = len(raw[: error.start].encode("utf-8", errors="surrogateescape"))
        return "invalid_utf8", f"bytes that are not UTF-8 at position {at}"
    if "\x00" in raw:
        return "nul_byte", f"a NUL byte (0x00) at position {raw.index(chr(0))}, which PostgreSQL text cannot hold"
    return None


def records(handle: BinaryIO, delimiter: str, width: int) -> Iterator[Record]:
    """The records after the header line; a record with a problem has ``rule`` set and no fields.

    Blank lines are skipped. A record is bad when its bytes are not UTF-8, it holds a NUL byte,
    the parser refuses it (e.g. a bare carriage return), or it has other than ``width`` fields.
    """
    csv.field_size_limit(max(csv.field_size_limit(), MAX_FIELD_CHARS))
    handle.readline()  # the header
    consumed: list[str] = []

    def lines() -> Iterator[str]:
        for line in handle:
            text = line.decode("utf-8", errors="surrogateescape")
            consumed.append(text)
            yield text

    reader = csv.reader(lines(), delimiter=delimiter)
    number = 2
    while True:
        try:
            fields = next(reader)
            error = None
        except StopIteration:
            return
        except csv.Error as parse_error:
            fields, error = [], f"not valid CSV: {parse_error}"
        raw = "".join(consumed)
        consumed.clear()
        first, number = number, number + max(raw.count("\n"), 1)
        if not raw.strip():
            continue
        problem = _problem(raw)
        if problem:
            yield Record(first, raw, [], *problem)
        elif error:
            yield Record(first, raw, [], "malformed_line", error)
        elif len(fields) != width:
            yield Record(first, raw, [], "malformed_line", f"expected {width} fields, found {len(fields)}")
        else:
            yield Record(first, raw, fields)
