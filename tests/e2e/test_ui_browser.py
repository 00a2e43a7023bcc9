"""The Airflow UI in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright.

Runs against the ``live_stack`` of the scheduler test (what ``make up`` starts) after the
``demand_chain`` runs: log in through the UI's login page, the DAG list, the trigger form of
``ingest__demand`` with its Params, and the plugin's reports page with the Data Docs of the day
that was ingested. Logged out, or never logged in, the reports are not shown. A screenshot per
step is saved under the test's tmp dir (its path is printed).

Skipped, with the reason, where Chromium or Playwright is missing; under CI (``CI=true``, where
``.ci/run`` installs Chromium) a missing browser fails instead.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
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
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright is not installed: `make test` installs requirements-test.txt")
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

    def shot(self, name: str) -> Path:
        path = self.folder / f"{len(self.saved) + 1:02d}_{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
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
