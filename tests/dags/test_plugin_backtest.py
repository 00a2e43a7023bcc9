"""The reports index links backtest reports (and their JSON) next to each dataset's nightly reports."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

PLUGIN_FILE = Path(__file__).resolve().parents[2] / "plugins" / "nightly_ml_plugin.py"


@pytest.fixture(scope="module")
def plugin() -> ModuleType:
    spec = importlib.util.spec_from_file_location("nightly_ml_plugin_under_test", PLUGIN_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_index_links_backtest_reports(plugin: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "demand").mkdir()
    (tmp_path / "demand" / "drift_2026-01-05.html").write_text("drift")
    (tmp_path / "demand" / "backtest_2025-01-01_2025-12-31.html").write_text("backtest")
    (tmp_path / "demand" / "backtest_2025-01-01_2025-12-31.json").write_text("{}")
    (tmp_path / "weather").mkdir()
    (tmp_path / "weather" / "backtest_2013-01-01_2013-03-31.html").write_text("only a backtest")

    reports = plugin.list_reports(tmp_path)
    kinds = sorted((r.dataset, r.kind, r.label) for r in reports)
    assert kinds == [
        ("demand", "backtest", "2025-01-01 to 2025-12-31"),
        ("demand", "drift", "2026-01-05"),
        ("weather", "backtest", "2013-01-01 to 2013-03-31"),
    ]
    page = plugin.render_index(reports, "/nightly-ml", tmp_path)
    for href in (
        "/nightly-ml/reports/demand/backtest_2025-01-01_2025-12-31.html",
        "/nightly-ml/reports/demand/backtest_2025-01-01_2025-12-31.json",
        "/nightly-ml/reports/demand/drift_2026-01-05.html",
        "/nightly-ml/reports/weather/backtest_2013-01-01_2013-03-31.html",
    ):
        assert f'href="{href}"' in page
    # a dataset with only a backtest gets no empty interval table
    weather = page.split("<h2>weather</h2>", 1)[1]
    assert "<table>" not in weather


def test_index_keeps_every_monitoring_runs_report(plugin: ModuleType, tmp_path: Path) -> None:
    """A re-run adds a report of its own; the night's first decision stays one click away."""
    (tmp_path / "demand" / "runs").mkdir(parents=True)
    (tmp_path / "demand" / "drift_2026-01-05.html").write_text("current")
    for run in ("scheduled__2026-01-06", "manual__2026-02-01"):
        (tmp_path / "demand" / "runs" / f"drift_2026-01-05__{run}.html").write_text(run)
    reports = plugin.list_reports(tmp_path)
    assert sorted(r.kind for r in reports) == ["drift", "drift_run", "drift_run"]
    page = plugin.render_index(reports, "/nightly-ml", tmp_path)
    for run in ("scheduled__2026-01-06", "manual__2026-02-01"):
        assert f'href="/nightly-ml/reports/demand/runs/drift_2026-01-05__{run}.html"' in page
    assert page.count("<tr><td>2026-01-05</td>") == 1
