"""The backtest report's HTML: plots (matplotlib ``Figure``, inlined PNGs) and the Jinja2 template.

Kept apart from :mod:`nightly_ml.monitoring.backtest` so that summarizing (and ``make backtest``'s text)
never imports matplotlib. Same conventions as the drift report: self-contained, autoescaped, and
byte-identical when re-rendered from the same summary.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from matplotlib.figure import Figure

from nightly_ml.monitoring.backtest_policies import POLICIES, POLICY_TITLES
from nightly_ml.monitoring.backtest_summary import BacktestSummary, Event
from nightly_ml.monitoring.reports import DPI, _environment, _png, _time_axis
from nightly_ml.spec import DatasetSpec

COLOURS = {"pipeline": "#DD8452", "baseline": "#8C8C8C", "fixed_cadence": "#4C72B0"}
STYLES = {"pipeline": "-", "baseline": "--", "fixed_cadence": "-"}
# Rows of the event strip under the metric plot: label, policy, kind, marker, colour.
EVENT_ROWS = (
    ("drift/decay trigger", "pipeline", "trigger", "v", "#C44E52"),
    ("promotion", "pipeline", "promote", "^", "#55A868"),
    ("rejected by gate", "pipeline", "reject", "x", "#C44E52"),
    ("rollback", "pipeline", "rollback", "<", "#8172B2"),
    ("fixed-cadence retrain", "fixed_cadence", "retrain", "|", COLOURS["fixed_cadence"]),
)


def _times(events: tuple[Event, ...], policy: str, kind: str) -> list[datetime]:
    return [e.at for e in events if e.policy == policy and e.kind == kind]


def metric_plot(summary: BacktestSummary) -> str:
    """The nightly metric of every policy over time, champion changes as vertical lines, events in a strip below."""
    fig = Figure(figsize=(10.0, 5.2), dpi=DPI)
    top, strip = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    compared = [r for r in summary.intervals if r.excluded is None]
    for policy in POLICIES:
        points = [(r.start, r.metrics.get(policy)) for r in compared]
        xs = [t for t, v in points if v is not None]
        ys = [v for _, v in points if v is not None]
        top.plot(
            xs,
            ys,
            STYLES[policy],
            color=COLOURS[policy],
            linewidth=1.1,
            marker="o" if len(xs) < 60 else None,
            markersize=3,
            label=POLICY_TITLES[policy],
        )
    for change in _times(summary.events, "pipeline", "champion"):
        top.axvline(change, color=COLOURS["pipeline"], linestyle=":", linewidth=0.9, alpha=0.8)
    for event in (e for e in summary.events if e.policy == "pipeline" and e.kind == "champion"):
        top.annotate(
            f"v{event.version}",
            (event.at, 1.0),
            xycoords=("data", "axes fraction"),
            fontsize=7,
            rotation=90,
            va="top",
            ha="right",
            color=COLOURS["pipeline"],
            annotation_clip=False,
        )
    direction = "higher is better" if summary.greater_is_better else "lower is better"
    top.set_ylabel(f"{summary.metric} ({direction})")
    top.set_title(f"Nightly {summary.metric} on the compared intervals (dotted: champion changes)", fontsize=10)
    top.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _time_axis(top)
    _event_strip(strip, summary)
    return _png(fig)


def _event_strip(ax: Any, summary: BacktestSummary) -> None:
    labels = [row[0] for row in EVENT_ROWS] + ["drift flagged"]
    for y, (_, policy, kind, marker, colour) in enumerate(EVENT_ROWS):
        times = _times(summary.events, policy, kind)
        ax.scatter(times, [y] * len(times), marker=marker, color=colour, s=28)
    drifted = [r.start for r in summary.intervals if r.drift]
    ax.scatter(drifted, [len(EVENT_ROWS)] * len(drifted), marker="s", color="#C44E52", s=10, alpha=0.6)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_ylim(-0.7, len(labels) - 0.3)
    ax.invert_yaxis()
    ax.set_xlim(summary.start, summary.end)
    _time_axis(ax)


def monthly_plot(summary: BacktestSummary) -> str:
    """The pooled metric per month and policy, as grouped bars."""
    months = [m for m in summary.months if m.compared_rows]
    fig = Figure(figsize=(max(5.0, 0.6 * len(months) + 3.0), 3.0), dpi=DPI)
    ax = fig.subplots()
    width = 0.8 / len(POLICIES)
    for i, policy in enumerate(POLICIES):
        xs = [k + (i - 1) * width for k in range(len(months))]
        ys = [m.metrics.get(policy) for m in months]
        ax.bar(
            xs,
            [float("nan") if v is None else v for v in ys],
            width,
            color=COLOURS[policy],
            label=POLICY_TITLES[policy],
        )
    ax.set_xticks(range(len(months)), [m.month for m in months], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(summary.metric)
    ax.set_title(f"{summary.metric} per month (rows pooled)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def _context(spec: DatasetSpec, summary: BacktestSummary, text: str) -> dict[str, Any]:
    reference = summary.overall.get("pipeline")
    headline = [
        {
            "title": POLICY_TITLES[p],
            "value": summary.overall.get(p),
            "ratio": (summary.overall[p] / reference) if summary.overall.get(p) is not None and reference else None,
        }
        for p in POLICIES
    ]
    excluded = Counter(r.excluded for r in summary.intervals if r.excluded is not None)
    return {
        "spec": spec,
        "s": summary,
        "text": text,
        "titles": POLICY_TITLES,
        "policies": POLICIES,
        "headline": headline,
        "excluded": sorted(excluded.items(), key=lambda item: -item[1]),
        "metric_plot": metric_plot(summary),
        "monthly_plot": monthly_plot(summary) if any(m.compared_rows for m in summary.months) else None,
        "events": [e for e in summary.events if e.kind != "champion" or e.policy != "pipeline"],
        "champions": [e for e in summary.events if e.kind == "champion"],
        # the spec's false-alarm rate, where the spec has one (drift calibration adds it)
        "false_alarm_rate": getattr(spec.drift, "false_alarm_rate", None),
    }


def render_html(spec: DatasetSpec, summary: BacktestSummary, *, text: str) -> str:
    """The report as an HTML string (``text`` is the terminal summary, shown verbatim at the top)."""
    return _environment().get_template("backtest_report.html").render(**_context(spec, summary, text))
