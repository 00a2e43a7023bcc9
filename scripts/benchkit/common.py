"""Constants, results and their rendering shared by the bench's sections."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

DATASET = "churn"
DAY = timedelta(days=1)
# Interval layout in the bench database (UTC days).
TRAIN_START = datetime(2024, 5, 1, tzinfo=UTC)
REFERENCE_START = datetime(2024, 6, 1, tzinfo=UTC)
REFERENCE_DAYS = 3
SMALL_DAY = REFERENCE_START + REFERENCE_DAYS * DAY  # the small monitored interval
LOAD_DAY = SMALL_DAY + DAY  # the big interval: loaded, validated, merged, scored, monitored
HOLDOUT_DAY = TRAIN_START - DAY
MODEL_VERSION = "bench"
LOAD_TARGET = 0.5  # the target: loader >= 0.5 x psql \copy
MIB = 1024.0  # ru_maxrss is in KiB on Linux

_T0 = time.monotonic()


def elapsed() -> float:
    """Seconds since the bench started (this module's import)."""
    return time.monotonic() - _T0


def progress(message: str) -> None:
    print(f"[bench {elapsed():7.1f}s] {message}", flush=True)


# --------------------------------------------------------------------------- results


@dataclass
class Measurement:
    section: str
    name: str
    rows: int
    seconds: float | None
    peak_mib: float | None = None
    note: str = ""

    @property
    def rows_per_second(self) -> float | None:
        if self.seconds is None or self.seconds <= 0 or self.rows <= 0:
            return None
        return self.rows / self.seconds


@dataclass
class Report:
    rows: int
    server: str
    measurements: list[Measurement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # scripts.benchkit.summary: each step of the night against psql \copy, and the peak memory check
    night: list[dict[str, Any]] = field(default_factory=list)
    memory: list[dict[str, Any]] = field(default_factory=list)

    def add(self, measurement: Measurement) -> Measurement:
        self.measurements.append(measurement)
        rate = measurement.rows_per_second
        peak = "" if measurement.peak_mib is None else f", task peak {measurement.peak_mib:.1f} MiB"
        shown = f"{rate:,.0f} rows/s" if rate else "skipped"
        progress(f"{measurement.section}: {measurement.name}: {shown}{peak}")
        return measurement

    def find(self, section: str, prefix: str) -> Measurement | None:
        return next((m for m in self.measurements if m.section == section and m.name.startswith(prefix)), None)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _time(function: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = function()
    return time.perf_counter() - started, value


def _format_rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def render(report: Report) -> str:
    header = ("section", "measurement", "rows", "seconds", "rows/s", "task peak MiB", "note")
    lines_data = [
        (
            m.section,
            m.name,
            f"{m.rows:,}",
            "-" if m.seconds is None else f"{m.seconds:.2f}",
            _format_rate(m.rows_per_second),
            "-" if m.peak_mib is None else f"{m.peak_mib:.1f}",
            m.note,
        )
        for m in report.measurements
    ]
    widths = [max(len(row[i]) for row in [header, *lines_data]) for i in range(len(header))]
    right = {2, 3, 4, 5}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [
        "",
        f"nightly_ml bench: {report.rows:,} churn rows, PostgreSQL at {report.server}",
        line(header),
        line(["-" * w for w in widths]),
    ]
    previous = None
    for row in lines_data:
        if previous is not None and row[0] != previous:
            out.append("")
        out.append(line(row))
        previous = row[0]
    out.append("")
    loader, psql, to_sql = (report.find("load", p) for p in ("loader", "psql", "pandas"))
    if loader and psql and loader.rows_per_second and psql.rows_per_second:
        ratio = loader.rows_per_second / psql.rows_per_second
        verdict = "PASS" if ratio >= LOAD_TARGET else "FAIL"
        out.append(f"loader / psql \\copy = {ratio:.2f} (issue target >= {LOAD_TARGET:.2f}): {verdict}")
    if loader and to_sql and loader.rows_per_second and to_sql.rows_per_second:
        out.append(f"loader / to_sql     = {loader.rows_per_second / to_sql.rows_per_second:.1f}x faster")
    out += [f"- {note}" for note in report.notes]
    from scripts.benchkit import summary

    out += summary.render_text(report.night, report.memory)
    return "\n".join(out)
