"""The shared file storage: landing, archive and reports under one root, a local folder or any fsspec URL.

With one machine the root is ``data/`` (``NIGHTLY_ML_DATA_DIR``). With workers on several machines it is
a URL every worker and the API server reach, e.g. ``NIGHTLY_ML_STORAGE_URL=s3://nightly-ml/prod``; the
object store's credentials and endpoint come from its library's usual environment (for S3:
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` for an S3-compatible server).

Paths are ``upath.UPath`` objects (the library under Airflow's ``ObjectStoragePath``): a local root gives
plain ``pathlib`` paths, so local behaviour and speed are unchanged. The few operations that differ
between a disk and an object store (moving a folder, writing a file that must appear whole, publishing
a folder written by a library that only writes to disk) live here and nowhere else.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from upath import UPath

from nightly_ml.config import settings

StoragePath = Path | UPath


def root() -> StoragePath:
    """The storage root (``NIGHTLY_ML_STORAGE_URL``, default the local data folder)."""
    return as_path(settings().storage_url)


def landing_root() -> StoragePath:
    """Where each interval's raw input waits until it is safely in the warehouse."""
    return root() / "landing"


def archive_root() -> StoragePath:
    """Where merged input is kept (a re-run of an interval reads it back from here)."""
    return root() / "archive"


def reports_root() -> StoragePath:
    """Data Docs, drift and backtest reports: what the plugin's reports app serves."""
    return root() / "reports"


def outbox_root() -> StoragePath:
    """Alert mails written as files when no SMTP connection is set (kept with the night's other files)."""
    return root() / "outbox"


def files_source_root(path: str) -> StoragePath:
    """The folder a ``files`` source's ``path`` names: a URL, an absolute path, or relative to the root."""
    location = as_path(path)
    return location if _is_remote(location) or Path(path).is_absolute() else root() / path


def as_path(location: str | os.PathLike[str]) -> StoragePath:
    """A stored location (a path or a URL, as written into ops tables and XCom) back as a path."""
    text = os.fspath(location)
    if "://" not in text or text.startswith("file://"):
        return Path(text.removeprefix("file://"))
    # Other processes (workers, the API server) write here too: never answer from a stale listing.
    return UPath(text, use_listings_cache=False)


def is_local(path: StoragePath) -> bool:
    return isinstance(path, Path) and not _is_remote(path)


def _is_remote(path: StoragePath) -> bool:
    return isinstance(path, UPath) and getattr(path, "protocol", "") not in ("", "file", "local")


def remove_tree(path: StoragePath) -> None:
    if not path.exists():
        return
    if _is_remote(path):
        path.fs.rm(path.path, recursive=True)  # type: ignore[union-attr]
    else:
        shutil.rmtree(path)


def copy_tree(source: StoragePath, target: StoragePath) -> None:
    """Copy a folder (replacing nothing: the target must not exist)."""
    if _is_remote(source) or _is_remote(target):
        for file in _files_under(source):
            relative = file.relative_to(source).as_posix() if not _is_remote(source) else _relative(source, file)
            destination = target.joinpath(*relative.split("/"))
            destination.parent.mkdir(parents=True, exist_ok=True)
            with file.open("rb") as reader, destination.open("wb") as writer:
                shutil.copyfileobj(reader, writer, 1 << 20)
        return
    shutil.copytree(source, target)


def move_tree(source: StoragePath, target: StoragePath) -> None:
    """Move a folder to ``target``, replacing an older copy there."""
    remove_tree(target)
    if _is_remote(source) or _is_remote(target):
        copy_tree(source, target)
        remove_tree(source)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(source, target)


def publish_tree(local_folder: Path, target: StoragePath) -> None:
    """Put a folder a library wrote on the local disk (Great Expectations' Data Docs) at ``target``."""
    if is_local(target) and local_folder.resolve() == Path(target).resolve():
        return
    remove_tree(target)
    copy_tree(local_folder, target)


def write_whole(path: StoragePath, write: Callable[[IO[bytes]], None]) -> StoragePath:
    """Write a file that readers only ever see complete.

    On a disk: a hidden partial file renamed into place. On an object store an object appears only
    when its upload completes, so the file is written in place.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if _is_remote(path):
        with path.open("wb") as handle:
            write(handle)
        return path
    partial = path.with_name(f".{path.name}.partial")
    try:
        with partial.open("wb") as handle:
            write(handle)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


@contextmanager
def readable(path: StoragePath) -> Generator[str | IO[bytes]]:
    """What a reader that takes a file name or a file object (pyarrow) should open: the local file's
    name (its fast native reader) or an open handle on the object store."""
    if not _is_remote(path):
        yield os.fspath(path)
        return
    with path.open("rb") as handle:
        yield handle


def _files_under(folder: StoragePath) -> Iterator[StoragePath]:
    for child in sorted(folder.iterdir(), key=lambda p: p.name):
        if child.is_dir():
            yield from _files_under(child)
        else:
            yield child


def _relative(folder: StoragePath, file: StoragePath) -> str:
    base = str(folder).rstrip("/") + "/"
    text = str(file)
    if not text.startswith(base):
        raise ValueError(f"{file} is not under {folder}")
    return text[len(base) :]


def relative_to_root(path: StoragePath) -> str | None:
    """``path`` relative to the storage's reports tree as a POSIX string, or None outside it."""
    base = reports_root()
    if is_local(base) and is_local(path):
        for folder, target in ((Path(base), Path(path)), (Path(base).resolve(), Path(path).resolve())):
            if target.is_relative_to(folder):
                return target.relative_to(folder).as_posix()
        return None
    try:
        return _relative(base, path)
    except ValueError:
        return None
