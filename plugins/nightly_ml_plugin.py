"""Nightly ML in the Airflow UI: the validation, drift and backtest reports, and links from tasks to them.

- **Reports app** at ``/nightly-ml/`` on the API server (a FastAPI sub-app): an index of the
  reports under ``settings().reports_dir`` and the report files themselves, read-only
  (Great Expectations Data Docs sites under ``data_docs/<dataset>/<partition>/``, drift
  reports at ``<dataset>/drift_<YYYY-MM-DD>.html`` and backtest reports of a replayed range at
  ``<dataset>/backtest_<from>_<to>.html``, with their data beside them as ``.json``). Every
  request needs a logged-in Airflow user allowed to see the website
  (``requires_access_view(AccessView.WEBSITE)``: the UI's session cookie or an API bearer token).
  Paths are resolved and must stay inside the reports directory. Report pages are served with a
  CSP ``sandbox``: they run in an opaque origin, so script inside a report cannot act with the
  user's Airflow session. Data Docs pages load Bootstrap, jQuery and friends from CDNs; they are
  served without any internet address in them, with small stand-ins inlined instead
  (``nightly_ml_static/``: the index tables, tabs and collapsible sections work, search and charts
  do not), and GX's logo from the site's own ``static/`` folder.
- **Browse menu** entry "Nightly ML reports" showing that index inside the UI.
- **Task extra links** (global, so they apply to every ``@task``): "Validation report",
  "Drift report" and "MLflow run", from the task's XComs ``data_docs_url``,
  ``drift_report_url`` and ``mlflow_run_url``. A link shows only when its XCom exists;
  ``file://`` URLs under the reports directory become URLs of the reports app.

Import is light on purpose: every Airflow process loads plugins (task processes too), so
FastAPI, the API server's security module and the metadata models are imported only when a
request or a link lookup needs them.
"""

# No `from __future__ import annotations` here: FastAPI must see the real `Request` class in the
# annotations of the endpoints below, which are defined inside build_app() to keep imports lazy.
import base64
import html
import json
import mimetypes
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from fastapi import FastAPI

URL_PREFIX = "/nightly-ml"
# Environment variable with the MLflow UI address as a browser reaches it, when that differs from
# MLFLOW_TRACKING_URI (in docker compose the workers log to http://mlflow:5000, a name only they resolve).
# Report pages run as an opaque origin: their scripts work (Data Docs needs them) but cannot read or
# use the Airflow session, so a value in the data that slipped into a page cannot act as the user.
REPORT_CSP = "sandbox allow-scripts allow-popups allow-popups-to-escape-sandbox allow-downloads"
INDEX_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'self'"

# Local stand-ins for the CDN assets of Great Expectations' Data Docs, inlined into the pages served.
STATIC_DIR = Path(__file__).resolve().with_name("nightly_ml_static")
_EXTERNAL = r"""(?:https?:)?//"""
_CDN_SCRIPT = re.compile(rf"""<script\b[^>]*\bsrc\s*=\s*["']?{_EXTERNAL}[^>]*>\s*</script\s*>""", re.IGNORECASE)
_CDN_STYLESHEET = re.compile(rf"""<link\b[^>]*\bhref\s*=\s*["']?{_EXTERNAL}[^>]*>""", re.IGNORECASE)
_EXTERNAL_IMAGE = re.compile(
    rf"""(<img\b[^>]*?\bsrc\s*=\s*)(["']){_EXTERNAL}[^"']*?([\w.-]+\.(?:png|svg|gif))(?:\?[^"']*)?\2""",
    re.IGNORECASE,
)
_EXTERNAL_ATTRIBUTE = re.compile(rf"""\s(?:href|src|action|srcset)\s*=\s*(["']){_EXTERNAL}[^"']*\1""", re.IGNORECASE)
_EXTERNAL_CSS_URL = re.compile(rf"""url\(\s*["']?{_EXTERNAL}[^)]*\)""", re.IGNORECASE)
IMAGE_TYPES = {".png": "image/png", ".svg": "image/svg+xml", ".gif": "image/gif"}
OFFLINE_NOTE = (
    '<div class="nightly-ml-offline-note">Shown without internet access: search, filters and charts of Data Docs '
    "are not available here.</div>"
)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def reports_root() -> Path:
    """The reports directory, read at call time so that a changed environment is seen."""
    from nightly_ml import storage

    return storage.reports_root()


def api_root_path() -> str:
    """The path Airflow's API server is served under (from ``[api] base_url``), without a trailing slash."""
    from airflow.configuration import conf

    return urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


def resolve_report(relative: str, root: Path | None = None) -> Path | None:
    """The file a request path names, or None when it is missing or would leave the reports directory.

    A directory stands for its ``index.html`` (a Data Docs site). Symbolic links are followed
    before the check, so a link pointing outside is refused too.
    """
    base = (root or reports_root()).resolve()
    try:
        candidate = (base / relative).resolve()
    except (OSError, ValueError):
        # e.g. an embedded NUL byte or a symlink loop: not a report
        return None
    if not candidate.is_relative_to(base):
        return None
    if candidate.is_dir():
        candidate = candidate / "index.html"
    return candidate if candidate.is_file() else None


def report_url(path: Path, root: Path | None = None) -> str | None:
    """The reports-app URL of a file under the reports directory (None for a file elsewhere)."""
    base = root or reports_root()
    for folder, target in ((base, path), (base.resolve(), path.resolve())):
        if target.is_relative_to(folder):
            relative = target.relative_to(folder).as_posix()
            return f"{api_root_path()}{URL_PREFIX}/reports/{quote(relative, safe='/=')}"
    return None


def _static(name: str) -> str:
    return (STATIC_DIR / name).read_text(encoding="utf-8")


def _site_image(page: Path, name: str, root: Path) -> str | None:
    """``static/images/<name>`` of the Data Docs site holding ``page``, as a data: URL (None when absent)."""
    folder = page.parent
    while folder.is_relative_to(root):
        candidate = folder / "static" / "images" / name
        if candidate.is_file():
            encoded = base64.b64encode(candidate.read_bytes()).decode()
            return f"data:{IMAGE_TYPES[candidate.suffix.lower()]};base64,{encoded}"
        if folder == root:
            break
        folder = folder.parent
    return None


def offline_data_docs(page: str, path: Path, root: Path | None = None) -> str:
    """A Great Expectations Data Docs page that loads nothing from the internet.

    CDN scripts and stylesheets are dropped and small local stand-ins inlined at the top of ``<head>``; an
    image from the internet becomes the site's own copy (``static/images/<name>``) or no image; links
    to web sites keep their text but lose their address; CSS ``url()`` to the internet become ``none``.
    """
    base = (root or reports_root()).resolve()

    def image(match: re.Match[str]) -> str:
        local = _site_image(path, match.group(3), base)
        return f"{match.group(1)}{match.group(2)}{local or ''}{match.group(2)}"

    page = _CDN_SCRIPT.sub("", page)
    page = _CDN_STYLESHEET.sub("", page)
    page = _EXTERNAL_IMAGE.sub(image, page)
    page = _EXTERNAL_ATTRIBUTE.sub("", page)
    page = _EXTERNAL_CSS_URL.sub("none", page)
    assets = f"<style>{_static('data_docs_offline.css')}</style><script>{_static('data_docs_offline.js')}</script>"
    head = re.search(r"<head\b[^>]*>", page, re.IGNORECASE)
    page = page[: head.end()] + assets + page[head.end() :] if head else assets + page
    body = re.search(r"<body\b[^>]*>", page, re.IGNORECASE)
    return page[: body.end()] + OFFLINE_NOTE + page[body.end() :] if body else page


@dataclass(frozen=True)
class Report:
    dataset: str
    kind: str
    label: str
    path: str
    modified: str


def list_reports(root: Path | None = None) -> list[Report]:
    """Data Docs sites, drift and backtest reports found under the reports directory, newest label first."""
    base = root or reports_root()
    if not base.is_dir():
        return []

    def stamp(path: Path) -> str:
        return datetime.fromtimestamp(path.stat().st_mtime, tz=UTC).isoformat(timespec="seconds")

    found: list[Report] = []
    for index in base.glob("data_docs/*/*/index.html"):
        dataset, partition = index.parts[-3], index.parts[-2]
        label = partition.removeprefix("ds=")
        found.append(Report(dataset, "validation", label, index.relative_to(base).as_posix(), stamp(index)))
    for drift in base.glob("*/drift_*.html"):
        if drift.parent.name == "data_docs":
            continue
        found.append(
            Report(
                drift.parent.name,
                "drift",
                drift.stem.removeprefix("drift_"),
                drift.relative_to(base).as_posix(),
                stamp(drift),
            )
        )
    for run_report in base.glob("*/runs/drift_*__*.html"):
        day = run_report.stem.removeprefix("drift_").split("__", 1)[0]
        found.append(
            Report(
                run_report.parent.parent.name,
                "drift_run",
                day,
                run_report.relative_to(base).as_posix(),
                stamp(run_report),
            )
        )
    for backtest in base.glob("*/backtest_*.html"):
        if backtest.parent.name == "data_docs":
            continue
        label = backtest.stem.removeprefix("backtest_").replace("_", " to ", 1)
        found.append(
            Report(backtest.parent.name, "backtest", label, backtest.relative_to(base).as_posix(), stamp(backtest))
        )
    found.sort(key=lambda r: r.kind)
    found.sort(key=lambda r: r.label, reverse=True)
    found.sort(key=lambda r: r.dataset)
    return found


def render_index(reports: list[Report], prefix: str, root: Path) -> str:
    """A plain HTML page: per dataset its backtests (one line per replayed range), then one table with a row
    per interval and a column per kind of nightly report."""
    rows: dict[str, dict[str, dict[str, Report]]] = {}
    backtests: dict[str, list[Report]] = {}
    history: dict[tuple[str, str], list[Report]] = {}
    for report in reports:
        if report.kind == "backtest":
            backtests.setdefault(report.dataset, []).append(report)
            rows.setdefault(report.dataset, {})
        elif report.kind == "drift_run":
            history.setdefault((report.dataset, report.label), []).append(report)
        else:
            rows.setdefault(report.dataset, {}).setdefault(report.label, {})[report.kind] = report

    def link(path: str) -> str:
        return f"{prefix}/reports/{quote(path, safe='/=')}"

    def cell(report: Report | None) -> str:
        if report is None:
            return "<td>—</td>"
        href = html.escape(link(report.path))
        return f'<td><a href="{href}" target="_blank" rel="noopener">open</a> <small>{report.modified}</small></td>'

    def runs(dataset: str, label: str) -> str:
        """Every monitoring run's own report of the interval (earlier decisions are kept, never overwritten)."""
        found = sorted(history.get((dataset, label), []), key=lambda r: r.modified)
        items = " · ".join(
            f'<a href="{html.escape(link(r.path))}" target="_blank" rel="noopener">'
            f"{html.escape(Path(r.path).stem.split('__', 1)[-1])}</a>"
            for r in found
        )
        return f"<td><small>{items or '—'}</small></td>"

    sections = []
    for dataset, by_label in rows.items():
        body = "".join(
            f"<tr><td>{html.escape(label)}</td>{cell(kinds.get('validation'))}{cell(kinds.get('drift'))}"
            f"{runs(dataset, label)}</tr>"
            for label, kinds in by_label.items()
        )
        replays = "".join(
            f'<li>{html.escape(r.label)}: <a href="{html.escape(link(r.path))}" target="_blank" rel="noopener">'
            f'backtest report</a> · <a href="{html.escape(link(r.path.removesuffix(".html") + ".json"))}">'
            f"data (JSON)</a> <small>{r.modified}</small></li>"
            for r in backtests.get(dataset, [])
        )
        sections.append(
            f"<h2>{html.escape(dataset)}</h2>"
            + (f"<p>Backtests (a replay of the dataset's history):</p><ul>{replays}</ul>" if replays else "")
            + (
                "<table><thead><tr><th>interval</th><th>validation (Data Docs)</th><th>drift report (current)</th>"
                "<th>drift report of each monitoring run</th></tr></thead>"
                f"<tbody>{body}</tbody></table>"
                if body
                else ""
            )
        )
    content = "".join(sections) or f"<p>No reports yet in <code>{html.escape(str(root))}</code>.</p>"
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Nightly ML reports</title><style>"
        "body{font-family:system-ui,sans-serif;margin:1.5rem}table{border-collapse:collapse;margin-bottom:1.5rem}"
        "td,th{border:1px solid #ccc;padding:.3rem .7rem;text-align:left}small{color:#666}"
        "</style></head><body><h1>Nightly ML reports</h1>"
        f"{content}</body></html>"
    )


def build_app(*, require_login: bool = True) -> "FastAPI":
    """The reports app. ``require_login=False`` is for tests only."""
    from fastapi import Depends, FastAPI, HTTPException, Request
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

    from nightly_ml import storage

    dependencies = []
    if require_login:
        # The API server's own check: the UI's JWT cookie or a bearer token, validated by the
        # configured auth manager (FAB in docker compose, simple auth in `make up`). It needs the
        # auth manager the API server initialises at start, which every mounted plugin app shares.
        from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
        from airflow.api_fastapi.core_api.security import requires_access_view

        dependencies.append(Depends(requires_access_view(AccessView.WEBSITE)))

    app = FastAPI(
        title="Nightly ML reports",
        dependencies=dependencies,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    def prefix(request: Request) -> str:
        # root_path holds the API server's base path plus the mount point of this app
        return str(request.scope.get("root_path", "")).rstrip("/")

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request) -> HTMLResponse:
        root = reports_root()
        page = render_index(list_reports(root), prefix(request), root)
        return HTMLResponse(page, headers={"Content-Security-Policy": INDEX_CSP, "Cache-Control": "no-cache"})

    @app.get("/index.json")
    def index_json(request: Request) -> JSONResponse:
        base = prefix(request)
        return JSONResponse(
            [{**asdict(r), "url": f"{base}/reports/{quote(r.path, safe='/=')}"} for r in list_reports()]
        )

    @app.get("/reports/{relative:path}", response_model=None)
    def report(relative: str) -> FileResponse | HTMLResponse | Response:
        path = resolve_report(relative)
        if path is None:
            raise HTTPException(status_code=404, detail="no such report")
        headers = {
            "Content-Security-Policy": REPORT_CSP,
            "X-Content-Type-Options": "nosniff",
            # a re-run rewrites the report of its interval
            "Cache-Control": "no-cache",
        }
        if path.suffix == ".html" and relative.startswith("data_docs/"):
            page = path.read_text(encoding="utf-8", errors="replace")
            return HTMLResponse(offline_data_docs(page, path), headers=headers)
        if not storage.is_local(path):
            # an object store (NIGHTLY_ML_STORAGE_URL=s3://…): reports are small, read whole
            media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            return Response(path.read_bytes(), media_type=media_type, headers=headers)
        return FileResponse(path, headers=headers)

    return app


class LazyReportsApp:
    """ASGI app that builds the FastAPI app on its first request, in the API server only."""

    def __init__(self) -> None:
        self._app: FastAPI | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            self._app = build_app()
        await self._app(scope, receive, send)


def decode_xcom_value(raw: Any) -> str | None:
    """An XCom value as a string: rows hold JSON text (``'"file:///..."'``) or the plain value."""
    if isinstance(raw, str):
        try:
            parsed = json.loads(raw)
        except ValueError:
            return raw or None
        return parsed if isinstance(parsed, str) and parsed else None
    return None


def read_xcom(ti_key: Any, key: str) -> str | None:
    """The task instance's XCom ``key`` from the metadata database (links are built in the API server)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    query = XComModel.get_many(
        key=key,
        run_id=ti_key.run_id,
        dag_ids=ti_key.dag_id,
        task_ids=ti_key.task_id,
        map_indexes=ti_key.map_index,
        limit=1,
    ).with_only_columns(XComModel.value)
    with create_session() as session:
        raw = session.scalar(query)
    return decode_xcom_value(raw)


def public_url(value: str) -> str:
    """A URL a browser can open from the Airflow UI, or '' when there is none.

    ``file://`` under the reports directory → the reports app; other ``file://`` URLs → ''
    (the UI refuses them anyway); an MLflow tracking-server URL → the MLflow UI address in
    ``NIGHTLY_ML_MLFLOW_UI_URL`` when set; anything else unchanged.
    """
    parts = urlsplit(value)
    if parts.scheme == "file":
        return report_url(Path(unquote(parts.path))) or ""
    from nightly_ml.config import settings

    ui_url = settings().mlflow_ui_url or ""
    tracking = settings().mlflow_tracking_uri.rstrip("/")
    if ui_url and tracking.startswith(("http://", "https://")) and value.startswith(tracking):
        return ui_url + value[len(tracking) :]
    return value


# The XCom keys the tasks push (nightly_ml.layout owns them; spelled out here because every Airflow
# process imports this plugin and must not import the pipeline package: a test keeps them equal).
XCOM_DATA_DOCS_URL = "data_docs_url"
XCOM_DRIFT_REPORT_URL = "drift_report_url"
XCOM_MLFLOW_RUN_URL = "mlflow_run_url"
XCOM_BACKTEST_REPORT_URL = "backtest_report_url"


class XComLink(BaseOperatorLink):
    """A link read from one XCom key of the task instance; empty (hidden) when there is no such XCom."""

    source_key: str = ""

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        value = read_xcom(ti_key, self.source_key)
        return public_url(value) if value else ""


class ValidationReportLink(XComLink):
    name = "Validation report"
    source_key = XCOM_DATA_DOCS_URL


class DriftReportLink(XComLink):
    name = "Drift report"
    source_key = XCOM_DRIFT_REPORT_URL


class MlflowRunLink(XComLink):
    name = "MLflow run"
    source_key = XCOM_MLFLOW_RUN_URL


class BacktestReportLink(XComLink):
    name = "Backtest report"
    source_key = XCOM_BACKTEST_REPORT_URL


class NightlyMLPlugin(AirflowPlugin):
    """Registers the reports app, its menu entry and the task links."""

    name = "nightly_ml"
    fastapi_apps = [{"app": LazyReportsApp(), "url_prefix": URL_PREFIX, "name": "Nightly ML reports"}]
    external_views = [
        {
            "name": "Nightly ML reports",
            "href": f"{api_root_path()}{URL_PREFIX}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "nightly-ml-reports",
        }
    ]
    global_operator_extra_links = [ValidationReportLink(), DriftReportLink(), MlflowRunLink(), BacktestReportLink()]
