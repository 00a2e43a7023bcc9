"""The shared storage root, on a local folder and on a real S3-compatible server (moto, its own process).

Each operation the pipeline needs behaves the same on both: files written whole, folders moved to the
archive (replacing an older copy) and copied back for a re-run, a folder a library wrote on the local
disk published, report URLs built from storage paths, stored locations read back as paths.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from nightly_ml import layout, storage
from nightly_ml.config import settings

pytestmark = pytest.mark.integration


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "s3":
        request.getfixturevalue("s3_bucket")
    else:
        monkeypatch.setenv("NIGHTLY_ML_STORAGE_URL", str(tmp_path / "store"))
        settings.cache_clear()
    monkeypatch.setenv("NIGHTLY_ML_DATA_DIR", str(tmp_path / "worker"))
    settings.cache_clear()
    yield request.param
    settings.cache_clear()


def _tree(folder: storage.StoragePath) -> dict[str, bytes]:
    found = {}
    for path in sorted(folder.rglob("*"), key=str):
        if path.is_file():
            found[
                storage._relative(folder, path) if not storage.is_local(folder) else path.relative_to(folder).as_posix()
            ] = path.read_bytes()
    return found


def test_the_root_follows_the_setting(root: str) -> None:
    assert storage.is_local(storage.root()) is (root == "local")
    assert str(storage.reports_root()).endswith("/reports")
    assert str(storage.landing_root()).endswith("/landing")


def test_a_file_is_written_whole_and_leaves_no_partial(root: str) -> None:
    target = storage.landing_root() / "demand" / "ds=2026-01-05" / "part-0.csv"
    storage.write_whole(target, lambda handle: handle.write(b"key,value\n1,2\n"))
    assert target.read_bytes() == b"key,value\n1,2\n"
    assert [p.name for p in target.parent.iterdir()] == ["part-0.csv"]

    def broken(handle: object) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        storage.write_whole(target.with_name("part-1.csv"), broken)
    if root == "local":  # an object store never shows an upload that did not complete
        assert [p.name for p in target.parent.iterdir()] == ["part-0.csv"]


def test_a_folder_moves_to_the_archive_replacing_an_older_copy_and_copies_back(root: str) -> None:
    landing = storage.landing_root() / "demand" / "ds=2026-01-05"
    archive = storage.archive_root() / "demand" / "ds=2026-01-05"
    storage.write_whole(archive / "stale.csv", lambda handle: handle.write(b"old"))
    for name, body in {"part-0.csv": b"a\n1\n", "labels-0.csv": b"k\n2\n", "sub/x.parquet": b"PAR1"}.items():
        storage.write_whole(landing.joinpath(*name.split("/")), lambda handle, body=body: handle.write(body))

    storage.move_tree(landing, archive)

    assert not landing.exists()
    assert _tree(archive) == {"labels-0.csv": b"k\n2\n", "part-0.csv": b"a\n1\n", "sub/x.parquet": b"PAR1"}
    storage.copy_tree(archive, landing)
    assert _tree(landing) == _tree(archive)


def test_a_local_folder_is_published_and_replaces_the_last_one(root: str, tmp_path: Path) -> None:
    site = tmp_path / "gx-site"
    (site / "validations").mkdir(parents=True)
    (site / "index.html").write_text("<h1>docs</h1>")
    (site / "validations" / "run.html").write_text("<p>run</p>")
    target = storage.reports_root() / "data_docs" / "demand" / "ds=2026-01-05"
    storage.write_whole(target / "gone.html", lambda handle: handle.write(b"from an older run"))

    storage.publish_tree(site, target)

    assert _tree(target) == {"index.html": b"<h1>docs</h1>", "validations/run.html": b"<p>run</p>"}


def test_report_urls_come_from_storage_paths_and_stored_strings(root: str) -> None:
    report = storage.reports_root() / "demand" / "drift_2026-01-05.html"
    storage.write_whole(report, lambda handle: handle.write(b"<h1>drift</h1>"))
    expected = f"{settings().reports_url}/demand/drift_2026-01-05.html"

    assert layout.public_url(report) == expected
    assert layout.public_url(str(report)) == expected  # as stored in ops tables and XCom
    assert storage.as_path(str(report)).read_bytes() == b"<h1>drift</h1>"
    assert layout.public_url(storage.archive_root() / "demand" / "x.csv") is None


def test_nothing_is_written_under_the_workers_data_folder_with_object_storage(
    s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nightly_ml import alerts

    monkeypatch.setenv("NIGHTLY_ML_DATA_DIR", str(tmp_path / "worker"))
    settings.cache_clear()

    storage.write_whole(storage.reports_root() / "r.html", lambda handle: handle.write(b"x"))
    where = alerts._write_outbox(_message())
    assert str(where).startswith("s3://")
    assert not settings().data_dir.exists() or not any(settings().data_dir.rglob("*"))


def _message():  # type: ignore[no-untyped-def]
    from email.message import EmailMessage

    message = EmailMessage()
    message["Subject"] = "[nightly-ml] test"
    message.set_content("body")
    return message
