"""The Airflow plugin: it registers, imports light, serves (and guards) the reports, and links tasks to them."""

from __future__ import annotations

import re
import runpy
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

PLUGINS_DIR = Path(__file__).resolve().parents[2] / "plugins"
PLUGIN_FILE = PLUGINS_DIR / "nightly_ml_plugin.py"
LINK_NAMES = {"Validation report", "Drift report", "MLflow run"}
# fastapi.testclient's own notice about its HTTP client, not about this code
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
# What a plugin must not pull into every Airflow process (task processes load plugins too).
HEAVY = ("fastapi", "starlette", "airflow.api_fastapi", "nightly_ml", "pandas", "sklearn", "mlflow", "scipy")


@pytest.fixture(scope="module")
def plugin() -> ModuleType:
    """The plugin module under its name once Airflow has loaded the plugins folder (for the reports app: any copy
    of the module serves it alike; the links' own module is patched by ``xcoms``)."""
    from airflow import plugins_manager

    plugins_manager.ensure_plugins_loaded()
    return sys.modules["nightly_ml_plugin"]


def test_airflow_loads_the_plugin_from_the_plugins_folder(plugin: ModuleType) -> None:
    from airflow import plugins_manager
    from airflow.api_fastapi.core_api.datamodels.plugins import ExternalViewResponse

    info = {entry["name"]: entry for entry in plugins_manager.get_plugin_info()}
    assert "nightly_ml" in info
    ours = info["nightly_ml"]
    assert str(ours["source"]) == "$PLUGINS_FOLDER/nightly_ml_plugin.py"
    assert [(app["url_prefix"], app["name"]) for app in ours["fastapi_apps"]] == [("/nightly-ml", "Nightly ML reports")]
    [view] = ours["external_views"]
    # the API server serialises it with this model for the UI's menu
    parsed = ExternalViewResponse.model_validate(view)
    assert (parsed.name, parsed.href, parsed.category, parsed.destination) == (
        "Nightly ML reports",
        "/nightly-ml/",
        "browse",
        "nav",
    )
    names = {link.name for link in plugins_manager.get_global_operator_extra_links()}
    assert names >= LINK_NAMES


def test_the_plugin_links_read_the_keys_the_tasks_push() -> None:
    from nightly_ml import layout

    plugin = runpy.run_path(str(PLUGIN_FILE))
    for name in ("XCOM_DATA_DOCS_URL", "XCOM_DRIFT_REPORT_URL", "XCOM_MLFLOW_RUN_URL", "XCOM_BACKTEST_REPORT_URL"):
        assert plugin[name] == getattr(layout, name), name


def test_the_plugin_imports_light() -> None:
    probe = (
        "import runpy, sys; import airflow.plugins_manager; before = set(sys.modules); "
        "runpy.run_path(sys.argv[1]); new = set(sys.modules) - before; "
        f"print(','.join(sorted(m for m in new if m.startswith({HEAVY!r}))))"
    )
    result = subprocess.run([sys.executable, "-c", probe, str(PLUGIN_FILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1:] in ([], [""]), f"heavy imports: {result.stdout}"


# --- the reports app ---------------------------------------------------------------------------

SECRET = "TOP SECRET, outside the reports"


@pytest.fixture
def reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A reports directory with a Data Docs site and two drift reports, and a file beside it."""
    from nightly_ml import storage
    from nightly_ml.config import settings

    monkeypatch.setenv("NIGHTLY_ML_DATA_DIR", str(tmp_path / "data"))
    settings.cache_clear()
    root = storage.reports_root()
    site = root / "data_docs" / "churn" / "ds=2026-01-05"
    (site / "validations").mkdir(parents=True)
    (site / "index.html").write_text("<h1>Data Docs churn 2026-01-05</h1>")
    (site / "validations" / "run.html").write_text("<p>one validation run</p>")
    (root / "churn").mkdir()
    (root / "churn" / "drift_2026-01-05.html").write_text("<h1>Drift churn 2026-01-05</h1>")
    (root / "churn" / "drift_2026-01-06.html").write_text("<h1>Drift churn 2026-01-06</h1>")
    secret = tmp_path / "data" / "secret.txt"
    secret.write_text(SECRET)
    (root / "escape.html").symlink_to(secret)
    yield root
    settings.cache_clear()


def mounted(app: Any) -> Any:
    """A root app with ``app`` mounted where the API server mounts the plugin's app."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    root = FastAPI()
    root.mount("/nightly-ml", app)
    return TestClient(root)


@pytest.fixture
def client(plugin: ModuleType, reports: Path) -> Any:
    """The reports app with the login check stubbed out (the API server's auth manager is not running)."""
    app = plugin.build_app()
    [login] = app.router.dependencies
    app.dependency_overrides[login.dependency] = lambda: None
    return mounted(app)


def test_reports_need_an_airflow_login(plugin: ModuleType, reports: Path) -> None:
    anonymous = mounted(plugin.NightlyMLPlugin.fastapi_apps[0]["app"])
    for path in ("/nightly-ml/", "/nightly-ml/index.json", "/nightly-ml/reports/churn/drift_2026-01-05.html"):
        response = anonymous.get(path)
        assert response.status_code == 401, path
        assert "Drift churn" not in response.text


def test_serves_a_drift_report(client: Any) -> None:
    response = client.get("/nightly-ml/reports/churn/drift_2026-01-05.html")
    assert response.status_code == 200
    assert "Drift churn 2026-01-05" in response.text
    assert response.headers["content-type"].startswith("text/html")
    # report pages run as an opaque origin: their scripts cannot use the Airflow session
    assert response.headers["content-security-policy"].startswith("sandbox")


def test_serves_a_data_docs_site_with_its_relative_pages(client: Any) -> None:
    site = "/nightly-ml/reports/data_docs/churn/ds=2026-01-05/"
    assert "Data Docs churn" in client.get(site + "index.html").text
    assert "Data Docs churn" in client.get(site).text, "a directory serves its index.html"
    assert "one validation run" in client.get(site + "validations/run.html").text


@pytest.mark.parametrize(
    "path",
    [
        "/nightly-ml/reports/../secret.txt",
        "/nightly-ml/reports/..%2Fsecret.txt",
        "/nightly-ml/reports/%2e%2e/secret.txt",
        "/nightly-ml/reports/churn/..%2F..%2Fsecret.txt",
        "/nightly-ml/reports/%2Fetc%2Fpasswd",
        "/nightly-ml/reports/escape.html",
        "/nightly-ml/reports/churn/missing.html",
    ],
)
def test_refuses_paths_outside_the_reports(client: Any, path: str) -> None:
    response = client.get(path)
    assert response.status_code in (403, 404), path
    assert SECRET not in response.text and "root:" not in response.text


def test_resolve_report_stays_inside(plugin: ModuleType, reports: Path) -> None:
    assert plugin.resolve_report("churn/drift_2026-01-05.html", reports) == reports / "churn" / "drift_2026-01-05.html"
    for outside in ("../secret.txt", "churn/../../secret.txt", "/etc/passwd", "escape.html", "nul\0byte"):
        assert plugin.resolve_report(outside, reports) is None, outside


def test_index_lists_every_report(client: Any) -> None:
    page = client.get("/nightly-ml/")
    assert page.status_code == 200
    for href in (
        "/nightly-ml/reports/data_docs/churn/ds=2026-01-05/index.html",
        "/nightly-ml/reports/churn/drift_2026-01-05.html",
        "/nightly-ml/reports/churn/drift_2026-01-06.html",
    ):
        assert f'href="{href}"' in page.text
    listing = client.get("/nightly-ml/index.json").json()
    assert sorted((r["kind"], r["label"]) for r in listing) == [
        ("drift", "2026-01-05"),
        ("drift", "2026-01-06"),
        ("validation", "2026-01-05"),
    ]
    for report in listing:
        assert client.get(report["url"]).status_code == 200


def test_index_escapes_names(client: Any, reports: Path) -> None:
    odd = reports / "data_docs" / "<img src=x onerror=alert(1)>" / "ds=2026-01-07"
    odd.mkdir(parents=True)
    (odd / "index.html").write_text("odd")
    page = client.get("/nightly-ml/").text
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_index_without_reports(client: Any, reports: Path) -> None:
    import shutil

    shutil.rmtree(reports)
    assert "No reports yet" in client.get("/nightly-ml/").text


# --- task links --------------------------------------------------------------------------------


@pytest.fixture
def xcoms(links: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The XComs of the task instance the links are asked about (stands in for the metadata DB).

    ``read_xcom`` is replaced in the module the registered links were defined in (their ``get_link``'s globals),
    which need not be ``sys.modules["nightly_ml_plugin"]``: Airflow 3 has two plugins managers, Airflow's own
    (``airflow.plugins_manager``: the API server, DAG serialization, these links) and the Task SDK's
    (``airflow.sdk.plugins_manager``: a running task's macros). Each executes the plugin file into a new module
    stored under that name, so once a task has run in this process (``dag.test`` in the end-to-end tests) the
    name holds the Task SDK's copy, while the links Airflow's manager cached still read the first copy's globals.
    """
    from nightly_ml.config import settings

    values: dict[str, str] = {}
    modules = {id(g): g for g in (type(links[name]).get_link.__globals__ for name in LINK_NAMES)}
    for namespace in modules.values():
        monkeypatch.setitem(namespace, "read_xcom", lambda ti_key, key: values.get(key))
    monkeypatch.delenv("AIRFLOW__API__BASE_URL", raising=False)
    yield values
    settings.cache_clear()


@pytest.fixture
def links() -> dict[str, Any]:
    from airflow import plugins_manager

    return {link.name: link for link in plugins_manager.get_global_operator_extra_links()}


def ti_key() -> Any:
    from airflow.models.taskinstancekey import TaskInstanceKey

    return TaskInstanceKey(dag_id="ingest__churn", task_id="validate", run_id="manual__1", try_number=1, map_index=-1)


def test_links_are_hidden_without_their_xcom(links: dict[str, Any], xcoms: dict[str, str]) -> None:
    for name in LINK_NAMES:
        assert links[name].get_link(None, ti_key=ti_key()) == ""


def test_report_links_point_at_the_reports_app(
    links: dict[str, Any], xcoms: dict[str, str], reports: Path, client: Any
) -> None:
    xcoms["data_docs_url"] = (reports / "data_docs" / "churn" / "ds=2026-01-05" / "index.html").as_uri()
    xcoms["drift_report_url"] = (reports / "churn" / "drift_2026-01-05.html").as_uri()
    validation = links["Validation report"].get_link(None, ti_key=ti_key())
    drift = links["Drift report"].get_link(None, ti_key=ti_key())
    assert validation == "/nightly-ml/reports/data_docs/churn/ds=2026-01-05/index.html"
    assert drift == "/nightly-ml/reports/churn/drift_2026-01-05.html"
    assert "Data Docs churn" in client.get(validation).text
    assert "Drift churn 2026-01-05" in client.get(drift).text


def test_report_links_follow_the_api_base_url(
    links: dict[str, Any], xcoms: dict[str, str], reports: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.com/ops/")
    xcoms["drift_report_url"] = (reports / "churn" / "drift_2026-01-05.html").as_uri()
    assert (
        links["Drift report"].get_link(None, ti_key=ti_key()) == "/ops/nightly-ml/reports/churn/drift_2026-01-05.html"
    )


def test_files_outside_the_reports_get_no_link(links: dict[str, Any], xcoms: dict[str, str], reports: Path) -> None:
    # the UI refuses file:// links anyway; a link to a file it cannot serve would only mislead
    xcoms["data_docs_url"] = (reports.parent / "secret.txt").as_uri()
    assert links["Validation report"].get_link(None, ti_key=ti_key()) == ""


def test_mlflow_link_uses_the_browser_address(
    links: dict[str, Any], xcoms: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from nightly_ml.config import settings

    xcoms["mlflow_run_url"] = "http://mlflow:5000/#/experiments/3/runs/abc123"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.delenv("NIGHTLY_ML_MLFLOW_UI_URL", raising=False)
    settings.cache_clear()
    assert links["MLflow run"].get_link(None, ti_key=ti_key()) == "http://mlflow:5000/#/experiments/3/runs/abc123"
    monkeypatch.setenv("NIGHTLY_ML_MLFLOW_UI_URL", "http://localhost:5000/")
    settings.cache_clear()
    assert links["MLflow run"].get_link(None, ti_key=ti_key()) == "http://localhost:5000/#/experiments/3/runs/abc123"


def test_links_apply_to_taskflow_tasks_as_the_api_server_sees_them(
    links: dict[str, Any], xcoms: dict[str, str]
) -> None:
    """The API server asks the deserialized operator, which takes global links from the plugins."""
    from datetime import UTC, datetime

    from airflow.sdk import dag, task
    from airflow.serialization.serialized_objects import DagSerialization

    @dag(schedule=None, start_date=datetime(2026, 1, 1, tzinfo=UTC))
    def probe() -> None:
        @task
        def validate() -> None:
            return None

        validate()

    served = DagSerialization.from_dict(DagSerialization.to_dict(probe())).get_task("validate")
    assert set(served.extra_links) >= LINK_NAMES
    xcoms["mlflow_run_url"] = "https://mlflow.example.com/#/experiments/1/runs/r1"
    instance = SimpleNamespace(key=ti_key())
    assert served.get_extra_links(instance, "MLflow run") == "https://mlflow.example.com/#/experiments/1/runs/r1"
    assert not served.get_extra_links(instance, "Drift report")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('"file:///data/reports/x.html"', "file:///data/reports/x.html"),  # JSON text, as rows hold it
        ("file:///data/reports/x.html", "file:///data/reports/x.html"),  # already decoded
        ('{"url": "file:///x"}', None),
        ('""', None),
        (42, None),
        (None, None),
    ],
)
def test_decode_xcom_value(plugin: ModuleType, raw: Any, expected: str | None) -> None:
    assert plugin.decode_xcom_value(raw) == expected


# --------------------------------------------------------------------------- Data Docs with no internet
def gx_page(view: str, renderer_type: str) -> str:
    """A page from Great Expectations' own page templates (the CDN references of the installed version), with
    a table of validation runs as the index page carries it."""
    from great_expectations.render import view as views
    from great_expectations.render.components import (
        RenderedBootstrapTableContent,
        RenderedDocumentContent,
        RenderedSectionContent,
    )

    table = RenderedBootstrapTableContent(
        table_data=[{"run_time": "2026-01-05 02:00:00 UTC", "_table_row_link_path": "validations/run.html"}],
        table_columns=[{"field": "run_time", "title": "Run Time"}],
        title_row="Validation Results",
    )
    section = RenderedSectionContent(section_name="runs", content_blocks=[table])
    document = RenderedDocumentContent(
        sections=[section], utm_medium="index-page", renderer_type=renderer_type, expectation_suite_name="churn_rows"
    )
    return getattr(views, view)().render(document)


@pytest.fixture(scope="module")
def gx_pages() -> dict[str, str]:
    return {
        "index.html": gx_page("DefaultJinjaIndexPageView", "SiteIndexPageRenderer"),
        "validations/run.html": gx_page("DefaultJinjaPageView", "ValidationResultsPageRenderer"),
    }


def internet_references(page: str) -> list[str]:
    """Every address in the page a browser would fetch or follow that is on another host."""
    from html.parser import HTMLParser

    found: list[str] = []

    class Collector(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            for name, value in attrs:
                if name in ("src", "href", "action", "srcset", "data-href", "data-src") and value:
                    found.append(value.strip())
                if name == "style" and value:
                    found.extend(re.findall(r"url\(\s*['\"]?([^'\")]+)", value))

        def handle_data(self, data: str) -> None:
            if self.lasttag == "style":
                found.extend(re.findall(r"url\(\s*['\"]?([^'\")]+)", data))
                found.extend(re.findall(r"@import\s+['\"]([^'\"]+)", data))

    Collector().feed(page)
    return [value for value in found if re.match(r"(?i)^(https?:)?//", value)]


def test_data_docs_are_served_with_no_internet_address(client: Any, reports: Path, gx_pages: dict[str, str]) -> None:
    import great_expectations

    site = reports / "data_docs" / "churn" / "ds=2026-01-05"
    for name, page in gx_pages.items():
        (site / name).write_text(page)
        # what GX writes does load Bootstrap, jQuery, … from CDNs
        assert internet_references(page), name
    logo = Path(great_expectations.__file__).parent / "render" / "view" / "static" / "images" / "logo-long.png"
    (site / "static" / "images").mkdir(parents=True)
    (site / "static" / "images" / "logo-long.png").write_bytes(logo.read_bytes())

    for name, page in gx_pages.items():
        response = client.get(f"/nightly-ml/reports/data_docs/churn/ds=2026-01-05/{name}")
        assert response.status_code == 200, name
        served = response.text
        assert internet_references(served) == [], name
        assert re.search(r"(?i)https?://[^\s\"'<>]*(jquery|bootstrap|unpkg|jsdelivr|cdnjs)", served) is None, name
        # the stand-ins are inlined, before the page's own scripts use them
        assert served.index("window.jQuery") < served.index("bootstrapTable(") if "bootstrapTable(" in served else True
        assert "Shown without internet access" in served
        assert response.headers["content-security-policy"].startswith("sandbox")
        # the file on disk stays as GX wrote it
        assert (site / name).read_text() == page
    index = client.get("/nightly-ml/reports/data_docs/churn/ds=2026-01-05/").text
    assert "validations/run.html" in index, "the index's table data is kept for the stand-in to draw"
    assert 'src="data:image/png;base64,' in index, "GX's logo comes from the site's own static folder"


def test_only_data_docs_pages_are_rewritten(client: Any) -> None:
    drift = client.get("/nightly-ml/reports/churn/drift_2026-01-05.html").text
    assert drift == "<h1>Drift churn 2026-01-05</h1>"
