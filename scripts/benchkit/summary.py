"""The issue's verdicts: each step of the night against ``psql \\copy`` of the batch (medians of the runs), and
the peak memory check at ``--big-rows``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from scripts.benchkit.common import LOAD_TARGET, median

# The targets (seconds of a step / seconds of psql \copy of the same batch, both medians).
NIGHT_TARGET = 5.0
VALIDATE_TARGET = 2.0
MERGE_TARGET = 1.5
MONITOR_TARGET = 1.5
SCORE_RATE_TARGET = 0.5  # scoring's rate / predict_proba's rate on the frame held in memory
MEMORY_GROWTH_TARGET = 1.2  # task peak at --big-rows / task peak at --rows
MEMORY_LIMIT_MIB = 1024.0  # the task's process, at --big-rows


def _verdict(passed: bool | None) -> str:
    return "-" if passed is None else ("PASS" if passed else "FAIL")


def _row(step: str, task: str, runs: Sequence[float] | None, psql: float) -> dict[str, Any]:
    runs = [float(r) for r in runs or []]
    seconds = median(runs) if runs else None
    return {
        "step": step,
        "task": task,
        "seconds": seconds,
        "runs": runs,
        "ratio": None if seconds is None else seconds / psql,
        "target": "",
        "verdict": "-",
    }


def _at_most(row: dict[str, Any], limit: float, extra: str = "") -> None:
    row["target"] = f"<= {limit:g}x psql" + extra
    row["verdict"] = _verdict(None if row["ratio"] is None else row["ratio"] <= limit)


def night_vs_psql(ctx: Any) -> list[dict[str, Any]]:
    """Rows step, task, seconds (median), runs, ratio (to psql's median), target, verdict; the psql row first and
    the night's total last. Empty when psql \\copy was not measured."""
    if not ctx.psql_times:
        return []
    psql = median(ctx.psql_times)
    scored, large = ctx.scored or {}, (ctx.monitored or {}).get("large") or {}
    rows = [
        {
            "step": "psql",
            "task": "psql \\copy of the batch",
            "seconds": psql,
            "runs": list(ctx.psql_times),
            "ratio": 1.0,
            "target": "",
            "verdict": "",
        },
        _row("load", "staging.stage_files (COPY into staging)", ctx.loader_times, psql),
        _row("validate", "validation.validate (GX in PostgreSQL)", ctx.validate_times, psql),
        _row("merge", "warehouse.merge_interval", ctx.merge_times, psql),
        _row("score", "scoring.write_predictions", scored.get("runs"), psql),
        _row("monitor", f"checks.compute_monitoring, {large.get('rows', 0):,}-row interval", large.get("runs"), psql),
    ]
    by_step = {r["step"]: r for r in rows}
    _at_most(by_step["load"], 1 / LOAD_TARGET, f" (rate >= {LOAD_TARGET:g}x psql)")
    _at_most(by_step["validate"], VALIDATE_TARGET)
    _at_most(by_step["merge"], MERGE_TARGET)
    _at_most(by_step["monitor"], MONITOR_TARGET)
    score, predicted = by_step["score"], (ctx.predicted or {}).get("seconds")
    if score["seconds"] and predicted:
        rate = predicted / score["seconds"]  # same rows: the rates' ratio is the inverse of the times'
        score["target"] = f"rate >= {SCORE_RATE_TARGET:g}x predict_proba in memory (is {rate:.2f}x)"
        score["verdict"] = _verdict(rate >= SCORE_RATE_TARGET)
    steps = rows[1:]
    complete = all(r["seconds"] is not None for r in steps)
    total = sum(r["seconds"] for r in steps) if complete else None
    night = {
        "step": "night",
        "task": "the night: load + validate + merge + score + monitor",
        "seconds": total,
        "runs": [],
        "ratio": None if total is None else total / psql,
        "target": "",
        "verdict": "-",
    }
    _at_most(night, NIGHT_TARGET)
    return [*rows, night]


def memory_check(tasks: dict[str, tuple[dict[str, Any], dict[str, Any]]], rows: int, big_rows: int) -> list[dict]:
    """Per task (its result at ``rows``, its result at ``big_rows``): the task's peak at both, their ratio, the
    process's peak at ``big_rows``, and the verdict (ratio <= 1.2 and the process under 1 GiB)."""
    out = []
    for task, (small, big) in tasks.items():
        peak, big_peak = small.get("task_peak_mib"), big.get("task_peak_mib")
        process = big.get("peak_mib")
        growth = None if peak is None or big_peak is None else big_peak / max(peak, 1e-9)
        passed = None
        if growth is not None and process is not None:
            passed = growth <= MEMORY_GROWTH_TARGET and process < MEMORY_LIMIT_MIB
        out.append(
            {
                "task": task,
                "rows": rows,
                "big_rows": big_rows,
                "task_peak_mib": peak,
                "big_task_peak_mib": big_peak,
                "growth": growth,
                "big_process_peak_mib": process,
                "target": f"<= {MEMORY_GROWTH_TARGET:g}x, process < {MEMORY_LIMIT_MIB / 1024:g} GiB",
                "verdict": _verdict(passed),
            }
        )
    return out


def _fmt(value: float | None, pattern: str = "{:.2f}") -> str:
    return "-" if value is None else pattern.format(value)


def render_text(night: list[dict[str, Any]], memory: list[dict[str, Any]]) -> list[str]:
    """The two summaries as plain-text lines for the console."""
    out: list[str] = []
    if night:
        out += ["", "the night against psql \\copy (medians; ratio = step's seconds / psql's seconds):"]
        width = max(len(r["task"]) for r in night)
        for r in night:
            runs = ", ".join(f"{t:.2f}" for t in r["runs"])
            out.append(
                f"  {r['task']:<{width}}  {_fmt(r['seconds']):>8} s  {_fmt(r['ratio']):>6}x  "
                f"{r['target']:<52}  {r['verdict']:<4}  {('runs: ' + runs) if runs else ''}".rstrip()
            )
    if memory:
        out += ["", "peak memory at --big-rows against --rows (task peak MiB; process peak at --big-rows):"]
        for m in memory:
            out.append(
                f"  {m['task']:<30} {_fmt(m['task_peak_mib'], '{:.1f}'):>7} at {m['rows']:,}, "
                f"{_fmt(m['big_task_peak_mib'], '{:.1f}'):>7} at {m['big_rows']:,} = {_fmt(m['growth'])}x, "
                f"process {_fmt(m['big_process_peak_mib'], '{:.0f}')} MiB ({m['target']}): {m['verdict']}"
            )
    return out


def markdown_night(night: list[dict[str, Any]], repeats: int) -> list[str]:
    """The night against psql \\copy as a Markdown table (for reports/bench/bench.md)."""
    out: list[str] = []
    if night:
        out += [
            "",
            f"## The night against psql \\copy (medians of {repeats} runs)",
            "",
            "| step | task | s | x psql \\copy | issue target | verdict | runs (s) |",
            "| --- | --- | ---: | ---: | --- | --- | --- |",
        ]
        for r in night:
            runs = ", ".join(f"{t:.2f}" for t in r.get("runs", []))
            out.append(
                f"| {r.get('step', '')} | {r['task']} | {_fmt(r['seconds'])} | {_fmt(r['ratio'])} | "
                f"{r['target']} | {r.get('verdict', '')} | {runs} |"
            )
    return out


def markdown_memory(memory: list[dict[str, Any]]) -> list[str]:
    """The peak memory check as a Markdown table (for reports/bench/bench.md)."""
    out: list[str] = []
    if memory:
        out += [
            "",
            "## Peak memory check (task peak MiB, fresh child process)",
            "",
            "| task | at --rows | at --big-rows | growth | process peak at --big-rows | target | verdict |",
            "| --- | ---: | ---: | ---: | ---: | --- | --- |",
        ]
        for m in memory:
            out.append(
                f"| {m['task']} | {_fmt(m['task_peak_mib'], '{:.1f}')} ({m['rows']:,}) | "
                f"{_fmt(m['big_task_peak_mib'], '{:.1f}')} ({m['big_rows']:,}) | {_fmt(m['growth'])}x | "
                f"{_fmt(m['big_process_peak_mib'], '{:.1f}')} | {m['target']} | {m['verdict']} |"
            )
    return out
