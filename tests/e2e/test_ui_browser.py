"""The Airflow UI in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright.

Runs against the ``live_stack`` of the scheduler test (what ``make up`` starts) after the
``demand_chain`` runs: log in through the UI's login page, the DAG list, the trigger form of
``ingest__demand`` with its Params, and the plugin's reports page with the Data Docs of the day
that was ingested. Logged out, or never logged in, the reports are not shown. Then the product end to
end: the bootstrap retraining runs (a first champion in MLflow), a run of ``ingest__demand`` is triggered
from the form for today so far (an interval that ends after the promotion, so that it is scored and monitored:
scoring is point in time), and once it and the score and monitor runs it starts have succeeded: the grid,
each task's extra links (Validation report, Drift report, MLflow run) and the pages they open, the reports
page, the registered model in the MLflow UI and the promotion mail in the mail catcher. No request leaves
this machine. A screenshot per step is saved under the test's tmp dir (the paths are printed). Last, no
port of the stack listens on anything but 127.0.0.1.

Skipped, with the reason, where Chromium or Playwright is missing; under CI (``CI=true``, where
``.ci/run`` installs Chromium) a missing browser fails instead.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

CHROMIUM_CANDIDATES = ("chromium", "/usr/bin/chromium")
STEP_TIMEOUT_MS = 60_000
PARAMS = {
    "Day": "A day (YYYY-MM-DD, in the dataset's time zone) to ingest.",
    "Interval start": "Or: start of an interval to ingest",
    "Interval end": "End of that interval (exclusive)",
}


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} — CI must have it (.ci/run installs Chromium, `make test` Playwright)")
    pytest.skip(reason)


def chromium_executable() -> str | None:
    for candidate in CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_executable()
    if executable is None:
        _missing("Debian's Chromium is not installed: `apt-get install -y chromium` (/usr/bin/chromium)")
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _missing("Playwright is not installed: `make test` installs requirements-test.txt")
    # Pages of a busy 2-core machine: every expectation of every test gets the step timeout, not
    # Playwright's 5 s (the DAG list once took longer under two test suites at once).
    expect.set_options(timeout=STEP_TIMEOUT_MS)
    with sync_playwright() as playwright:
        # Playwright's own browser download is never used: it drives the system's Chromium.
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield browser
        finally:
            browser.close()


class Steps:
    """A page and a screenshot per step, numbered in order, under one folder."""

    def __init__(self, page: Any, folder: Path) -> None:
        self.page = page
        self.folder = folder
        self.saved: list[Path] = []
        folder.mkdir(parents=True, exist_ok=True)

    def shot(self, name: str, page: Any = None) -> Path:
        path = self.folder / f"{len(self.saved) + 1:02d}_{name}.png"
        (page or self.page).screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 0
        self.saved.append(path)
        return path


def log_in(page: Any, stack: Any) -> None:
    page.goto(f"{stack.url}/")
    # not logged in: the UI sends the browser to its login page
    page.wait_for_url(re.compile(r"/auth/login"))
    page.get_by_label("Username").fill(stack.username)
    page.get_by_label("Password").fill(stack.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/login" not in url)


def test_login_dag_list_trigger_form_and_reports_in_chromium(browser, live_stack, demand_chain, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    day = demand_chain.day.isoformat()
    docs = live_stack.data_dir / "reports" / "data_docs" / "demand" / f"ds={day}" / "index.html"
    assert docs.is_file(), f"the ingest of {day} left no Data Docs at {docs}"

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(STEP_TIMEOUT_MS)
    page = context.new_page()
    steps = Steps(page, tmp_path / "screenshots")
    try:
        page.goto(f"{live_stack.url}/")
        page.wait_for_url(re.compile(r"/auth/login"))
        expect(page.get_by_role("button", name="Sign in")).to_be_visible()
        steps.shot("login_page")
        log_in(page, live_stack)

        page.goto(f"{live_stack.url}/dags")
        expect(page.get_by_role("link", name="ingest__demand", exact=True)).to_be_visible()
        expect(page.get_by_role("link", name="score__demand", exact=True)).to_be_visible()
        steps.shot("dag_list")

        page.goto(f"{live_stack.url}/dags/ingest__demand")
        page.get_by_test_id("trigger-dag-button").click()
        form = page.get_by_role("dialog")
        expect(form).to_contain_text("Trigger Dag - ingest__demand")
        expect(form).to_contain_text("Run Parameters")
        for title, description in PARAMS.items():
            expect(form.get_by_text(title, exact=True)).to_be_visible()
            expect(form.get_by_text(description, exact=False)).to_be_visible()
        expect(page.get_by_test_id("trigger-dag-submit")).to_be_visible()
        steps.shot("trigger_form")
        form.get_by_role("button", name="Close").click()
        expect(form).to_be_hidden()

        response = page.goto(f"{live_stack.url}/nightly-ml/")
        assert response is not None and response.status == 200
        expect(page.get_by_role("heading", name="Nightly ML reports")).to_be_visible()
        row = page.get_by_role("row").filter(has_text=day)
        expect(row).to_have_count(1)
        docs_link = row.get_by_role("link").first
        href = docs_link.get_attribute("href") or ""
        assert f"/nightly-ml/reports/data_docs/demand/ds={day}/" in href, href
        steps.shot("reports_index")

        response = page.goto(f"{live_stack.url}{href}")
        assert response is not None and response.status == 200
        # Great Expectations' Data Docs site of that day's validation (its tables fill from a CDN script,
        # which this machine cannot fetch: the page's data names the day's validation run)
        expect(page.get_by_role("tab", name="Validation Results")).to_be_visible()
        assert f"demand__{demand_chain.day:%Y%m%d}" in page.content()
        steps.shot("data_docs")

        # Logged out (the UI's User menu), the reports are not shown any more.
        page.goto(f"{live_stack.url}/dags")
        page.get_by_role("button", name="User").click()
        page.get_by_role("menuitem", name=re.compile(r"log ?out", re.IGNORECASE)).click()
        confirm = page.get_by_role("dialog").filter(has_text="You are about to logout")
        confirm.get_by_role("button", name="Confirm").click()
        page.wait_for_url(re.compile(r"/auth/login"))
        steps.shot("logged_out")
        response = page.goto(f"{live_stack.url}/nightly-ml/")
        assert response is not None and response.status in (401, 403), response.status
        assert day not in page.content()
        steps.shot("reports_after_logout")
    finally:
        print("screenshots:\n" + "\n".join(str(path) for path in steps.saved))
        context.close()
    assert [path.stem for path in steps.saved] == [
        "01_login_page",
        "02_dag_list",
        "03_trigger_form",
        "04_reports_index",
        "05_data_docs",
        "06_logged_out",
        "07_reports_after_logout",
    ]


def test_reports_are_not_shown_without_login(browser, live_stack, demand_chain, tmp_path: Path) -> None:
    day = demand_chain.day.isoformat()
    context = browser.new_context()
    context.set_default_timeout(STEP_TIMEOUT_MS)
    page = context.new_page()
    steps = Steps(page, tmp_path / "screenshots")
    try:
        for path in ("/nightly-ml/", f"/nightly-ml/reports/data_docs/demand/ds={day}/"):
            response = page.goto(f"{live_stack.url}{path}")
            assert response is not None and response.status in (401, 403), (path, response.status)
            assert "Nightly ML reports" not in page.content()
            assert "Data Docs" not in page.content()
        steps.shot("reports_without_login")
    finally:
        context.close()


# --------------------------------------------------------------------------- the product, end to end
FLOW_TIMEOUT_S = 420.0
MODEL = "demand_model"
# Anything the browser asks of another host than this machine is refused and recorded.
ELSEWHERE = re.compile(r"^(?:https?|wss?)://(?!(?:127\.0\.0\.1|localhost)(?::\d+)?/)")


def wait_for_training(stack: Any, deadline: float) -> dict[str, Any]:
    """The first ``retrain__demand`` run that trained a model (its ``train`` task succeeded)."""
    while True:
        listed = stack.api("GET", "/api/v2/dags/retrain__demand/dagRuns", params={"order_by": "run_after"})
        listed.raise_for_status()
        states = {}
        for run in listed.json()["dag_runs"]:
            tasks = stack.task_states("retrain__demand", run["dag_run_id"])
            states[run["dag_run_id"]] = (run["state"], tasks)
            if run["state"] == "success" and tasks.get("train") == "success":
                require_a_first_champion(stack)
                return run
            if run["state"] == "failed":
                pytest.fail(stack.failure_report("retrain__demand", run["dag_run_id"]))
        if time.monotonic() > deadline:
            pytest.fail(f"no retrain__demand run trained a model by the deadline: {states}")
        time.sleep(3)


def require_a_first_champion(stack: Any) -> None:
    """The bootstrap's challenger was promoted: without a champion the ingest below is neither scored nor
    monitored (no drift report), which would fail later with a missing link instead of the gate's reason."""
    import psycopg2

    with psycopg2.connect(stack.warehouse_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT action, gate_reasons FROM ops.promotion_history WHERE dataset = 'demand' ORDER BY id")
        decisions = cur.fetchall()
    conn.close()
    if not any(action == "promote" for action, _ in decisions):
        pytest.fail(f"the bootstrap retraining promoted no champion: {decisions}")


def wait_for_new_run(stack: Any, dag_id: str, start: str, known: set[str], deadline: float) -> dict[str, Any]:
    """A run of ``dag_id`` not in ``known``, started by an Asset event of the interval ``start``, finished."""
    while True:
        listed = stack.api("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"order_by": "run_after", "limit": 100})
        listed.raise_for_status()
        for run in listed.json()["dag_runs"]:
            if run["dag_run_id"] in known or start not in stack.covered_intervals(dag_id, run["dag_run_id"]):
                continue
            finished = stack.wait_for_run(dag_id, run["dag_run_id"], deadline)
            if finished["state"] != "success":
                pytest.fail(stack.failure_report(dag_id, run["dag_run_id"]))
            return finished
        if time.monotonic() > deadline:
            pytest.fail(f"no new {dag_id} run for {start} by the deadline")
        time.sleep(2)


def run_ids(stack: Any, dag_id: str) -> set[str]:
    listed = stack.api("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": 100})
    listed.raise_for_status()
    return {run["dag_run_id"] for run in listed.json()["dag_runs"]}


def loaded_interval(stack: Any, run_id: str) -> str:
    """The interval start (ISO, UTC) an ingest run merged, from ``ops.load_audit``."""
    import psycopg2

    conn = psycopg2.connect(stack.warehouse_url)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT interval_start FROM ops.load_audit WHERE dataset = 'demand' AND run_id = %s "
                "AND status = 'merged'",
                (run_id,),
            )
            (start,) = [row[0] for row in cur.fetchall()]
    finally:
        conn.close()
    return start.isoformat()


def task_details(page: Any, stack: Any, dag_id: str, run_id: str, task_id: str) -> None:
    """From the DAG's grid, the task instance of that run, then its Details tab (where extra links are)."""
    from playwright.sync_api import expect

    page.goto(f"{stack.url}/dags/{dag_id}/runs/{run_id}")
    cell = page.locator(f'a[href="/dags/{dag_id}/runs/{run_id}/tasks/{task_id}"]')
    cell.first.click()
    page.wait_for_url(re.compile(rf"/runs/.+/tasks/{task_id}$"))
    expect(page.get_by_role("heading", name=task_id, exact=True)).to_be_visible()
    page.get_by_role("link", name="Details", exact=True).click()
    expect(page.get_by_text("Extra Links", exact=True)).to_be_visible()


def open_extra_link(page: Any, name: str) -> Any:
    """Follow a task's extra link and return the page it opened, loaded: a new tab for a link to another
    site (the MLflow UI), the same tab for one on the Airflow server (the reports app)."""
    link = page.get_by_role("link", name=name, exact=True)
    href = link.get_attribute("href") or ""
    if link.get_attribute("target") == "_blank":
        with page.context.expect_page() as opened:
            link.click()
        tab = opened.value
    else:
        link.click()
        page.wait_for_url(href)
        tab = page
    tab.wait_for_load_state()
    return tab


def done_with(tab: Any, page: Any) -> None:
    if tab is not page:
        tab.close()


def test_a_run_from_the_trigger_form_its_links_reports_model_and_mail_in_chromium(
    browser, live_stack, demand_chain, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    stack = live_stack
    deadline = time.monotonic() + FLOW_TIMEOUT_S
    # retrain (paused until now) runs the bootstrap retraining the first monitoring asked for: a first champion
    stack.api("PATCH", "/api/v2/dags/retrain__demand", json={"is_paused": False}).raise_for_status()

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(STEP_TIMEOUT_MS)
    elsewhere: list[str] = []
    context.route(ELSEWHERE, lambda route: (elsewhere.append(route.request.url), route.abort()))
    page = context.new_page()
    steps = Steps(page, tmp_path / "screenshots")
    try:
        log_in(page, stack)
        training = wait_for_training(stack, deadline)
        known = {dag_id: run_ids(stack, dag_id) for dag_id in ("score__demand", "monitor__demand")}

        # The trigger form, filled and submitted: the UI creates the run and shows it. Scoring is point in
        # time (the champion as of the interval's end), and the first champion was promoted just now: the
        # interval is today so far, [midnight, now), so that it is scored, monitored and gets a drift report.
        now = datetime.now(UTC).replace(microsecond=0)
        interval = {"interval_start": f"{now:%Y-%m-%d}T00:00:00Z", "interval_end": f"{now:%Y-%m-%dT%H:%M:%S}Z"}
        day = f"{now:%Y-%m-%d}"
        page.goto(f"{stack.url}/dags/ingest__demand")
        page.get_by_test_id("trigger-dag-button").click()
        form = page.get_by_role("dialog")
        expect(form).to_contain_text("Run Parameters")
        for name, value in interval.items():
            form.locator(f"#element_{name}").fill(value)
        steps.shot("trigger_form_filled")
        with page.expect_response(lambda r: r.url.endswith("/dags/ingest__demand/dagRuns")) as created:
            page.get_by_test_id("trigger-dag-submit").click()
        assert created.value.status == 200, created.value.text()
        run = created.value.json()
        assert {k: run["conf"][k] for k in interval} == interval and run["run_type"] == "manual"
        run_id = run["dag_run_id"]
        page.wait_for_url(re.compile(r"/dags/ingest__demand/runs/"))

        finished = stack.wait_for_run("ingest__demand", run_id, deadline)
        if finished["state"] != "success":
            pytest.fail(stack.failure_report("ingest__demand", run_id))
        start = loaded_interval(stack, run_id)
        assert start.startswith(day), start
        wait_for_new_run(stack, "score__demand", start, known["score__demand"], deadline)
        monitor = wait_for_new_run(stack, "monitor__demand", start, known["monitor__demand"], deadline)

        # the grid of that run, its validate task and the Validation report link: the Data Docs, offline
        task_details(page, stack, "ingest__demand", run_id, "validate")
        expect(page.get_by_role("link", name="Validation report", exact=True)).to_be_visible()
        expect(page.get_by_text("Drift report", exact=True)).to_have_count(0)
        steps.shot("grid_validate_extra_links")
        docs = open_extra_link(page, "Validation report")
        assert f"/nightly-ml/reports/data_docs/demand/ds={day}/" in docs.url, docs.url
        expect(docs.get_by_text("Shown without internet access")).to_be_visible()
        runs_table = docs.get_by_role("link", name="open", exact=True)
        expect(runs_table.first).to_be_visible()
        steps.shot("data_docs_index", docs)
        runs_table.first.click()
        docs.wait_for_url(re.compile(r"/validations/.+\.html$"))
        # GX's validation result of that day's batch, its tables drawn with no script from the internet
        expect(docs.get_by_text(f"demand__{now:%Y%m%d}").first).to_be_visible()
        expect(docs.get_by_role("columnheader", name="Observed Value").first).to_be_visible()
        expect(docs.get_by_role("cell", name=re.compile(r"must (be|never)")).first).to_be_visible()
        steps.shot("data_docs_validation_result", docs)
        done_with(docs, page)

        # the monitor run the Asset started: its check task links this run's drift report
        task_details(page, stack, "monitor__demand", monitor["dag_run_id"], "check")
        steps.shot("monitor_check_extra_links")
        drift = open_extra_link(page, "Drift report")
        expect(drift.get_by_role("heading", name="Drift report: demand")).to_be_visible()
        assert "/nightly-ml/reports/demand/" in drift.url, drift.url
        steps.shot("drift_report", drift)
        done_with(drift, page)

        # the retraining: its train task links the MLflow run
        task_details(page, stack, "retrain__demand", training["dag_run_id"], "train")
        steps.shot("retrain_train_extra_links")
        mlflow_run = open_extra_link(page, "MLflow run")
        assert mlflow_run.url.startswith(f"{stack.mlflow_url}/#/experiments/"), mlflow_run.url
        expect(mlflow_run.get_by_text("holdout_rmse").first).to_be_visible()
        steps.shot("mlflow_run", mlflow_run)
        done_with(mlflow_run, page)

        # the reports page: the day's Data Docs and drift report, and this monitoring run's own copy
        page.goto(f"{stack.url}/nightly-ml/")
        row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=day, exact=True))
        expect(row).to_have_count(1)
        links = [link.get_attribute("href") or "" for link in row.get_by_role("link").all()]
        assert any(f"/reports/demand/drift_{day}.html" in href for href in links), links
        assert any("/reports/demand/runs/drift_" in href for href in links), links
        steps.shot("reports_index_with_drift")

        # the registered model in the MLflow UI: version 1, the champion
        page.goto(f"{stack.mlflow_url}/#/models/{MODEL}")
        expect(page.get_by_text(MODEL).first).to_be_visible()
        expect(page.get_by_role("link", name="Version 1", exact=True).first).to_be_visible()
        expect(page.get_by_text("champion").first).to_be_visible()
        steps.shot("mlflow_registered_model")

        # the promotion mail, caught by the stack's mail catcher
        page.goto(f"{stack.mail_url}/")
        promoted = page.get_by_role("link", name=re.compile(r"demand: model version 1 promoted"))
        expect(promoted).to_have_count(1)
        steps.shot("mail_catcher_list")
        promoted.click()
        expect(page.get_by_text(f"The champion of {MODEL} moved from version none to version 1")).to_be_visible()
        steps.shot("mail_catcher_promotion_mail")
    finally:
        print("screenshots:\n" + "\n".join(str(path) for path in steps.saved))
        context.close()
    assert elsewhere == [], f"pages asked for addresses off this machine: {elsewhere}"
    assert [path.stem[3:] for path in steps.saved] == [
        "trigger_form_filled",
        "grid_validate_extra_links",
        "data_docs_index",
        "data_docs_validation_result",
        "monitor_check_extra_links",
        "drift_report",
        "retrain_train_extra_links",
        "mlflow_run",
        "reports_index_with_drift",
        "mlflow_registered_model",
        "mail_catcher_list",
        "mail_catcher_promotion_mail",
    ]


def test_no_port_of_the_stack_listens_beyond_127_0_0_1(live_stack) -> None:
    listening = live_stack.listening()
    ports = {int(url.rsplit(":", 1)[1]) for url in (live_stack.url, live_stack.mlflow_url, live_stack.mail_url)}
    smtp_port = int(live_stack.env["AIRFLOW__SMTP__SMTP_PORT"])
    # the API server, MLflow, the mail catcher's web page and its SMTP server are found listening…
    assert ports | {smtp_port} <= set(listening), listening
    # …and nothing the stack started listens on any other address (no wildcard, no log server on 8793/8794)
    assert {port: addresses for port, addresses in listening.items() if addresses != {"127.0.0.1"}} == {}
