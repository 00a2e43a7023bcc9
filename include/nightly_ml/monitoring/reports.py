"""The drift report: one self-contained HTML file per dataset and interval.

Plots are PNGs drawn with matplotlib's object-oriented API (``Figure`` renders with Agg and
touches no global pyplot state, so it is safe in worker threads) and inlined as base64
``data:`` URIs; the page needs no other file. Text goes through a Jinja2 template with
autoescaping, so names and reasons cannot inject markup.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any

import jinja2
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from nightly_ml import layout, storage
from nightly_ml.monitoring.aggregates import PREDICTION_FEATURE
from nightly_ml.monitoring.results import MonitoringHistory, MonitoringResult
from nightly_ml.monitoring.statistics import Histogram
from nightly_ml.spec import METRIC_GREATER_IS_BETTER, DatasetSpec
from nightly_ml.storage import StoragePath

REFERENCE_COLOUR = "#4C72B0"
CURRENT_COLOUR = "#DD8452"
DPI = 90
# Bar labels longer than this are cut in plots (the table keeps the full text).
MAX_TICK_LABEL = 18


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("nightly_ml", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _format_number
    env.filters["pct"] = _format_share
    return env


def _format_number(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}g}"


def _format_share(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:.1%}"


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    # Fixed metadata keeps the file identical across re-runs of the same interval.
    fig.savefig(buffer, format="png", bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _short(label: str) -> str:
    return label if len(label) <= MAX_TICK_LABEL else label[: MAX_TICK_LABEL - 1] + "…"


def histogram_plot(title: str, histogram: Histogram) -> str:
    """Reference vs current share per bin or category, as a PNG data URI."""
    count = len(histogram.labels)
    fig = Figure(figsize=(max(4.0, 0.45 * count + 2.0), 2.8), dpi=DPI)
    ax = fig.subplots()
    positions = list(range(count))
    width = 0.4
    left, right = [p - width / 2 for p in positions], [p + width / 2 for p in positions]
    ax.bar(left, histogram.reference_shares, width, label="reference", color=REFERENCE_COLOUR)
    ax.bar(right, histogram.current_shares, width, label="current", color=CURRENT_COLOUR)
    ax.set_xticks(
        positions, [_short(label) for label in histogram.labels], rotation=45, ha="right", fontsize=8, parse_math=False
    )
    ax.set_ylabel("share of rows")
    # parse_math=False: a '$' in a name must not be read as TeX.
    ax.set_title(title, fontsize=10, parse_math=False)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def _time_axis(ax: Any) -> None:
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.grid(alpha=0.3)


def psi_history_plot(
    dates: Sequence[datetime], series: dict[str, list[float]], threshold: float, prediction_threshold: float
) -> str:
    """PSI per feature over the monitoring history, with the spec's effect-size floors (thresholds are per night)."""
    fig = Figure(figsize=(8.0, 3.4), dpi=DPI)
    ax = fig.subplots()
    for name, values in series.items():
        ax.plot(dates, values, marker="o", markersize=3, linewidth=1.2, label=name)
    ax.axhline(threshold, color="crimson", linestyle="--", linewidth=1, label="feature PSI floor")
    if prediction_threshold != threshold:
        ax.axhline(prediction_threshold, color="purple", linestyle=":", linewidth=1, label="prediction PSI floor")
    ax.set_ylabel("PSI")
    ax.set_title("PSI per feature", fontsize=10)
    _time_axis(ax)
    legend = ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    for text in legend.get_texts():
        text.set_parse_math(False)
    return _png(fig)


def performance_history_plot(
    dates: Sequence[datetime], values: list[float], metric: str, holdout: float | None, tolerance: float
) -> str:
    """The live primary metric over the monitoring history, with the champion's holdout value and tolerance."""
    fig = Figure(figsize=(8.0, 3.0), dpi=DPI)
    ax = fig.subplots()
    ax.plot(dates, values, marker="o", markersize=3, color=CURRENT_COLOUR, label=f"live {metric}")
    if holdout is not None and math.isfinite(holdout):
        ax.axhline(holdout, color=REFERENCE_COLOUR, linewidth=1, label="champion holdout")
        limit = holdout - tolerance if METRIC_GREATER_IS_BETTER[metric] else holdout + tolerance
        ax.axhline(limit, color="crimson", linestyle="--", linewidth=1, label="decay limit")
    ax.set_ylabel(metric)
    ax.set_title(f"Live {metric} on labelled rows", fontsize=10)
    _time_axis(ax)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(fig)


def _context(spec: DatasetSpec, result: MonitoringResult, history: MonitoringHistory) -> dict[str, Any]:
    verdict = result.verdict
    timeline = history.with_result(result).points
    dates = [p.interval_start for p in timeline]
    names = [f.feature for f in verdict.features]
    if verdict.prediction is not None or any(PREDICTION_FEATURE in p.feature_psi for p in timeline):
        names.append(PREDICTION_FEATURE)
    series = {
        ("predictions" if name == PREDICTION_FEATURE else name): [p.feature_psi.get(name, math.nan) for p in timeline]
        for name in names
    }
    metric = spec.promotion.primary_metric
    performance = verdict.performance
    holdout = performance.holdout if performance is not None else None
    return {
        "spec": spec,
        "result": result,
        "verdict": verdict,
        "features": [
            {"drift": f, "plot": histogram_plot(f"{f.feature} ({f.kind})", f.histogram)} for f in verdict.features
        ],
        "prediction_plot": (
            histogram_plot("champion predictions", verdict.prediction.histogram) if verdict.prediction else None
        ),
        "psi_plot": psi_history_plot(dates, series, spec.drift.psi_threshold, spec.drift.prediction_psi_threshold),
        "performance_plot": performance_history_plot(
            dates,
            [p.live_metrics.get(metric, math.nan) for p in timeline],
            metric,
            holdout,
            spec.drift.performance_tolerance,
        ),
        "metric": metric,
        "metrics": [
            {"name": name, "live": value, "primary": name == metric} for name, value in result.live_metrics.items()
        ],
        "holdout": holdout,
        "history_length": len(timeline),
        "unmonitored": [f.name for f in spec.features if f.name not in names],
    }


def render_report_html(spec: DatasetSpec, result: MonitoringResult, history: MonitoringHistory) -> str:
    """The report as an HTML string."""
    return _environment().get_template("drift_report.html").render(**_context(spec, result, history))


def _write(path: StoragePath, html: str) -> None:
    # Written whole: the UI never serves half a report.
    body = html.encode("utf-8")
    storage.write_whole(path, lambda handle: handle.write(body))


def report_path_for(spec: DatasetSpec, interval_start: datetime, output_dir: StoragePath) -> StoragePath:
    """Where an interval's drift report lives: ``<output_dir>/reports/<dataset>/drift_<local day>.html``,
    named as :mod:`nightly_ml.layout` names it."""
    return output_dir / "reports" / spec.name / layout.drift_report_path(spec, interval_start).name


def render_report(
    spec: DatasetSpec, result: MonitoringResult, history: MonitoringHistory, output_dir: StoragePath
) -> StoragePath:
    """Write ``<output_dir>/reports/<dataset>/drift_<YYYY-MM-DD>.html`` (the interval's latest report) and this
    run's own copy under ``runs/`` (:func:`nightly_ml.layout.drift_run_report_path`, never replaced by a later
    run), each atomically; return the interval's path."""
    path = report_path_for(spec, result.interval_start, output_dir)
    html = render_report_html(spec, result, history)
    _write(layout.drift_run_report_path(path, result.run_id), html)
    _write(path, html)
    return path
