"""The drift report renders from a synthetic result and history: valid, self-contained, escaped."""

from __future__ import annotations

import base64
import math
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from nightly_ml.monitoring import drift, statistics
from nightly_ml.monitoring.aggregates import PREDICTION_FEATURE
from nightly_ml.monitoring.reports import render_report
from nightly_ml.monitoring.results import HistoryPoint, MonitoringHistory, MonitoringResult
from nightly_ml.spec import DatasetSpec, load_spec

START = datetime(2024, 3, 10, tzinfo=UTC)
MALICIOUS = "<script>alert('x')</script>"
VOID = {"meta", "img", "br", "hr", "link", "input", "col", "source", "area", "base", "wbr"}


class _Checker(HTMLParser):
    """Tracks tag nesting (HTML5 void elements excepted) and collects text and image sources."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[str] = []
        self.images: list[str] = []
        self.scripts = 0
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "script":
            self.scripts += 1
        if tag == "img":
            self.images.append(dict(attrs)["src"] or "")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> with open {self.stack[-3:]}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.fixture(scope="module")
def spec() -> DatasetSpec:
    return load_spec("churn")


def _result(spec: DatasetSpec, names: list[str]) -> MonitoringResult:
    numeric = drift.numeric_feature_drift(
        names[0],
        (10.0, 20.0, 30.0),
        [250, 250, 250, 250],
        [20, 30, 50, 100],
        0.31,
        spec.drift,
        reference=statistics.SampleStats(1000, 1000, 20.0, 8.0),
        current=statistics.SampleStats(200, 200, 29.0, 8.5),
    )
    categorical = drift.categorical_feature_drift(
        names[1],
        {"basic": 500, "premium": 500},
        {"basic": 45, "premium": 50, "family": 5},
        spec.drift,
        reference=statistics.SampleStats(1000, 1000),
        current=statistics.SampleStats(100, 100),
    )
    prediction = drift.prediction_drift(
        (0.1, 0.3),
        [300, 400, 300],
        [20, 80, 200],
        spec.drift,
        interval_start=START - timedelta(days=1),
        reference_intervals=[START - timedelta(days=d) for d in (3, 2)],
    )
    metrics = {"roc_auc": 0.71, "pr_auc": 0.4, "log_loss": 0.5, "brier": 0.15, "f1": 0.3, "accuracy": 0.8}
    performance = drift.performance_check("roc_auc", metrics, {"roc_auc": 0.8}, 600, spec.drift)
    verdict = drift.decide(spec, [numeric, categorical], prediction=prediction, performance=performance)
    return MonitoringResult(
        dataset=spec.name,
        interval_start=START,
        interval_end=START + timedelta(days=1),
        run_id="scheduled__2024-03-10",
        reference_start=START - timedelta(days=22),
        reference_end=START - timedelta(days=1),
        champion_version="3",
        rows=200,
        reference_rows=1000,
        verdict=verdict,
        live_metrics=metrics,
        labelled_rows=600,
    )


def _history(spec: DatasetSpec, names: list[str]) -> MonitoringHistory:
    points = tuple(
        HistoryPoint(
            interval_start=START - timedelta(days=d),
            should_retrain=False,
            prediction_psi=0.02 * d,
            live_metrics={"roc_auc": 0.8 - 0.01 * d if d != 3 else math.nan},
            labelled_rows=500,
            feature_psi={names[0]: 0.01 * d, names[1]: 0.02, PREDICTION_FEATURE: 0.02 * d},
        )
        for d in range(6, 0, -1)
    )
    return MonitoringHistory(spec.name, points)


def _render(spec: DatasetSpec, names: list[str], tmp_path: Path) -> tuple[Path, str, _Checker]:
    path = render_report(spec, _result(spec, names), _history(spec, names), tmp_path)
    html = path.read_text(encoding="utf-8")
    checker = _Checker()
    checker.feed(html)
    checker.close()
    return path, html, checker


def test_report_is_valid_self_contained_html_with_every_feature(spec: DatasetSpec, tmp_path: Path) -> None:
    path, html, checker = _render(spec, ["monthly_charges", "plan"], tmp_path)
    assert path == tmp_path / "reports" / "churn" / "drift_2024-03-10.html"
    assert html.startswith("<!DOCTYPE html>")
    assert checker.errors == [] and checker.stack == []
    for tag in ("html", "head", "title", "body", "table"):
        assert tag in checker.tags
    text = " ".join(checker.text)
    for expected in (
        "monthly_charges",
        "plan",
        "Retrain recommended",
        "prediction drift",
        "performance decay",
        "family",
    ):
        assert expected in text
    # per-feature plots, prediction plot, two time series; all inline PNGs
    assert len(checker.images) == 5
    for src in checker.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG")
    assert 'class="drifted"' in html
    assert "http://" not in html and "https://" not in html


def test_report_escapes_malicious_feature_names(spec: DatasetSpec, tmp_path: Path) -> None:
    _, html, checker = _render(spec, [MALICIOUS, "plan & <b>co</b>"], tmp_path)
    assert MALICIOUS not in html
    assert "<b>co</b>" not in html
    assert "&lt;script&gt;" in html
    assert checker.scripts == 0
    assert checker.errors == []
    assert MALICIOUS in " ".join(checker.text)  # shown as text, not run


def test_report_without_prediction_drift_or_history(spec: DatasetSpec, tmp_path: Path) -> None:
    result = _result(spec, ["monthly_charges", "plan"])
    quiet = MonitoringResult(
        **{**result.__dict__, "verdict": drift.decide(spec, result.verdict.features[1:])},
    )
    path = render_report(spec, quiet, MonitoringHistory(spec.name), tmp_path)
    html = path.read_text(encoding="utf-8")
    assert "Not measured" in html
    assert "History (1 interval(s))" in html
