"""Airflow's own backfill replays a real dataset's history: ``POST /api/v2/backfills`` of ``ingest__<dataset>``.

The live stack (``airflow standalone`` + MLflow, see the ``live_stack`` fixture) also serves a light copy of
the real ``nyc_airport_temperature`` spec: hourly weather at three New York airports, one CSV per *local*
day with extra and renamed columns and naive local timestamps, exported for 2013-03-08..12 (2013-03-10, the
spring DST change, is 23 hours long), its ``start_date`` 2013-03-08. No code is changed for it.

The history is backfilled through the REST API exactly as a user would, in two ranges so that the champion
of each night is known without racing the scheduler:

1. 2013-03-08..09 with ``retrain__`` paused: loaded, scored (no champion yet: skipped, said why) and
   monitored (bootstrap retraining asked for, queued). Then ``retrain__`` is unpaused until the queued runs
   have trained and promoted a first champion (decided on 2013-03-09's monitoring: it takes effect at that
   interval's end) and paused again.
2. 2013-03-10..12: each night scored and judged by that champion, which never trained on it.

Then the whole range is backfilled again (``reprocess_behavior: "completed"``), and a range before the
spec's ``start_date`` is asked for. Downstream runs are the scheduler's own Asset-triggered ``score__`` and
``monitor__`` runs; which intervals each covered is read from its upstream Asset events.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.live_stack_specs("nyc_airport_temperature"),
    # the stack's start, three backfills and a retrain, all in this module's first test
    pytest.mark.timeout(2400),
]

DATASET = "nyc_airport_temperature"
INGEST, SCORE, MONITOR, RETRAIN = (f"{stage}__{DATASET}" for stage in ("ingest", "score", "monitor", "retrain"))
ZONE = ZoneInfo("America/New_York")
BOOTSTRAP_DAYS = (date(2013, 3, 8), date(2013, 3, 9))
CHAMPION_DAYS = (date(2013, 3, 10), date(2013, 3, 11), date(2013, 3, 12))
ALL_DAYS = BOOTSTRAP_DAYS + CHAMPION_DAYS
DST_DAY = date(2013, 3, 10)
BEFORE_START = (date(2013, 3, 6), date(2013, 3, 7))
PHASE_TIMEOUT_S = 480.0
FINISHED = {"success", "failed"}


def local_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=ZONE)


def interval_of(day: date) -> tuple[datetime, datetime]:
    """The spec's interval of a local day, in UTC (DST-correct)."""
    return local_midnight(day).astimezone(UTC), local_midnight(day + timedelta(days=1)).astimezone(UTC)


def backfill_body(first: date, last: date, reprocess: str = "none") -> dict[str, Any]:
    """``POST /api/v2/backfills``: logical dates are the intervals' starts, local midnights (with their offset:
    a bare date would mean UTC midnight, and the last local day would be left out)."""
    return {
        "dag_id": INGEST,
        "from_date": local_midnight(first).isoformat(),
        "to_date": local_midnight(last).isoformat(),
        "max_active_runs": 1,  # one night after the other: the Asset events come in the order of the nights
        "reprocess_behavior": reprocess,
        "run_backwards": False,
        "dag_run_conf": {},
    }


# --------------------------------------------------------------------------- REST helpers
def runs_of(stack, dag_id: str) -> list[dict[str, Any]]:
    response = stack.api("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"order_by": "run_after", "limit": 100})
    response.raise_for_status()
    return response.json()["dag_runs"]


def set_paused(stack, dag_id: str, paused: bool) -> None:
    stack.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": paused}).raise_for_status()


def upstream_events(stack, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    response = stack.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/upstreamAssetEvents")
    response.raise_for_status()
    return response.json()["asset_events"]


def covered(stack, dag_id: str, run_id: str) -> list[datetime]:
    """The interval starts (UTC) an Asset-triggered run was about, from its upstream events, oldest first."""
    starts: set[datetime] = set()
    for event in upstream_events(stack, dag_id, run_id):
        extra = event.get("extra") or {}
        pairs = extra.get("intervals") or [[extra["interval_start"], extra["interval_end"]]]
        starts.update(datetime.fromisoformat(start).astimezone(UTC) for start, _ in pairs)
    return sorted(starts)


def task_log(stack, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
    """One try's log, its structured lines as text (the API serves JSON or NDJSON only, not text/plain)."""
    response = stack.api(
        "GET",
        f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{max(1, try_number)}",
        params={"full_content": "true"},
        headers={"Accept": "application/json"},
    )
    response.raise_for_status()
    return "\n".join(
        line if isinstance(line, str) else json.dumps(line, default=str) for line in response.json()["content"]
    )


def wait_for_backfill(stack, backfill_id: int, deadline: float) -> list[dict[str, Any]]:
    """Poll until the scheduler marks the backfill complete; its ingest runs (all finished), oldest first."""
    while True:
        response = stack.api("GET", f"/api/v2/backfills/{backfill_id}")
        response.raise_for_status()
        if response.json()["completed_at"] is not None:
            break
        if time.monotonic() > deadline:
            runs = [r for r in runs_of(stack, INGEST) if r["run_type"] == "backfill"]
            reports = [stack.failure_report(INGEST, r["dag_run_id"]) for r in runs if r["state"] not in FINISHED]
            pytest.fail(f"backfill {backfill_id} not complete at the deadline:\n" + "\n".join(reports))
        time.sleep(3)
    runs = [r for r in runs_of(stack, INGEST) if r["run_type"] == "backfill"]
    return sorted(runs, key=lambda r: r["logical_date"])


def wait_for_downstream(
    stack, dag_id: str, before: set[str], starts: set[datetime], deadline: float
) -> list[tuple[dict[str, Any], list[datetime]]]:
    """Poll until the runs of ``dag_id`` created since ``before`` have all finished and together cover
    ``starts``; those runs (oldest first) with the interval starts each covered."""
    while True:
        new = [r for r in runs_of(stack, dag_id) if r["dag_run_id"] not in before]
        done = [(r, covered(stack, dag_id, r["dag_run_id"])) for r in new if r["state"] in FINISHED]
        seen = {start for _, starts_of_run in done for start in starts_of_run}
        if len(done) == len(new) and starts <= seen:
            return done
        if time.monotonic() > deadline:
            reports = [stack.failure_report(dag_id, r["dag_run_id"]) for r in new]
            pytest.fail(
                f"{dag_id}: intervals covered at the deadline {sorted(seen)}, wanted {sorted(starts)}\n"
                + "\n".join(reports)
            )
        time.sleep(3)


def rows(url: str, statement: str, params: dict[str, Any] | None = None) -> list[tuple]:
    import psycopg2

    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, params or {})
            return cur.fetchall()
    finally:
        conn.close()


# --------------------------------------------------------------------------- the replay
@dataclass
class Backfilled:
    """One ``POST /api/v2/backfills`` and what the scheduler made of it."""

    body: dict[str, Any]
    response: dict[str, Any]
    ingest_runs: list[dict[str, Any]]
    score_runs: list[tuple[dict[str, Any], list[datetime]]] = field(default_factory=list)
    monitor_runs: list[tuple[dict[str, Any], list[datetime]]] = field(default_factory=list)
    # ops.load_audit by interval start: (interval_end, status, rows_merged, checksum, finished_at, run_id)
    audit: dict[datetime, tuple] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class History:
    bootstrap: Backfilled
    champion: Backfilled
    rerun: Backfilled
    before_start: Backfilled | None
    before_start_refusal: tuple[int, str] | None
    retrain_runs: list[dict[str, Any]]
    promotions: list[tuple]
    retrain_seconds: float


def audit_of(stack) -> dict[datetime, tuple]:
    found = rows(
        stack.warehouse_url,
        "SELECT interval_start, interval_end, status, rows_merged, checksum, finished_at, run_id "
        "FROM ops.load_audit WHERE dataset = %(d)s ORDER BY interval_start",
        {"d": DATASET},
    )
    return {row[0].astimezone(UTC): (row[1].astimezone(UTC), *row[2:]) for row in found}


def backfill(stack, body: dict[str, Any], days: tuple[date, ...], *, downstream: bool = True) -> Backfilled:
    started = time.monotonic()
    deadline = started + PHASE_TIMEOUT_S
    before = {dag_id: {r["dag_run_id"] for r in runs_of(stack, dag_id)} for dag_id in (SCORE, MONITOR)}
    response = stack.api("POST", "/api/v2/backfills", json=body)
    assert response.status_code == 200, response.text
    created = response.json()
    wanted = {local_midnight(day).astimezone(UTC) for day in days}
    ingest_runs = [
        r
        for r in wait_for_backfill(stack, created["id"], deadline)
        if datetime.fromisoformat(r["logical_date"]).astimezone(UTC) in wanted
    ]
    result = Backfilled(body=body, response=created, ingest_runs=ingest_runs)
    if downstream and all(r["state"] == "success" for r in ingest_runs):
        starts = {interval_of(day)[0] for day in days}
        result.score_runs = wait_for_downstream(stack, SCORE, before[SCORE], starts, deadline)
        result.monitor_runs = wait_for_downstream(stack, MONITOR, before[MONITOR], starts, deadline)
    result.audit = audit_of(stack)
    result.seconds = time.monotonic() - started
    return result


def bootstrap_champion(stack, deadline: float) -> list[dict[str, Any]]:
    """Let the retrain runs that monitoring queued run (until none is left unfinished), then pause again."""
    set_paused(stack, RETRAIN, False)
    try:
        while True:
            runs = runs_of(stack, RETRAIN)
            if runs and all(r["state"] in FINISHED for r in runs):
                return runs
            if time.monotonic() > deadline:
                pytest.fail(
                    "retrain runs unfinished at the deadline:\n"
                    + "\n".join(stack.failure_report(RETRAIN, r["dag_run_id"]) for r in runs)
                )
            time.sleep(3)
    finally:
        set_paused(stack, RETRAIN, True)


@pytest.fixture(scope="module")
def history(live_stack) -> History:
    stack = live_stack
    for dag_id in (INGEST, SCORE, MONITOR):  # a paused DAG's backfill runs stay queued; retrain stays paused
        set_paused(stack, dag_id, False)

    bootstrap = backfill(stack, backfill_body(*BOOTSTRAP_DAYS), BOOTSTRAP_DAYS)
    started = time.monotonic()
    retrain_runs = bootstrap_champion(stack, started + PHASE_TIMEOUT_S)
    retrain_seconds = time.monotonic() - started
    promotions = rows(
        stack.warehouse_url,
        "SELECT to_version, action, interval_start, interval_end FROM ops.promotion_history "
        "WHERE dataset = %(d)s ORDER BY id",
        {"d": DATASET},
    )
    champion = backfill(stack, backfill_body(CHAMPION_DAYS[0], CHAMPION_DAYS[-1]), CHAMPION_DAYS)
    rerun = backfill(stack, backfill_body(ALL_DAYS[0], ALL_DAYS[-1], "completed"), ALL_DAYS)

    refused = stack.api("POST", "/api/v2/backfills", json=backfill_body(*BEFORE_START))
    before_start = refusal = None
    if refused.status_code == 200:
        deadline = time.monotonic() + PHASE_TIMEOUT_S
        created = refused.json()
        runs = [
            r
            for r in wait_for_backfill(stack, created["id"], deadline)
            if datetime.fromisoformat(r["logical_date"]).date() < ALL_DAYS[0]
        ]
        before_start = Backfilled(body=backfill_body(*BEFORE_START), response=created, ingest_runs=runs)
        before_start.audit = audit_of(stack)
    else:
        refusal = (refused.status_code, refused.text)
    for dag_id in (INGEST, SCORE, MONITOR):
        set_paused(stack, dag_id, True)
    # what else unpausing the ingest DAG started (catchup: false -> the scheduler's own run of the latest interval)
    for run in runs_of(stack, INGEST):
        if run["run_type"] != "backfill":
            print(f"{INGEST}: also a {run['run_type']} run {run['dag_run_id']}: {run['state']}")
    for name, phase in (("bootstrap", bootstrap), ("champion", champion), ("rerun", rerun)):
        print(f"backfill {name}: {len(phase.ingest_runs)} ingest runs and their chain in {phase.seconds:.0f} s")
    print(f"bootstrap retraining: {len(retrain_runs)} run(s) in {retrain_seconds:.0f} s")
    return History(bootstrap, champion, rerun, before_start, refusal, retrain_runs, promotions, retrain_seconds)


def phases(history: History) -> list[tuple[str, Backfilled, tuple[date, ...]]]:
    return [
        ("bootstrap", history.bootstrap, BOOTSTRAP_DAYS),
        ("champion", history.champion, CHAMPION_DAYS),
        ("rerun", history.rerun, ALL_DAYS),
    ]


# --------------------------------------------------------------------------- what it proves
def test_every_backfilled_night_is_merged_with_its_local_day_bounds(live_stack, history: History) -> None:
    for name, phase, days in phases(history):
        assert phase.response["reprocess_behavior"] == phase.body["reprocess_behavior"]
        assert [datetime.fromisoformat(r["logical_date"]).astimezone(ZONE).date() for r in phase.ingest_runs] == list(
            days
        ), name
        for run in phase.ingest_runs:
            if run["state"] != "success":
                pytest.fail(f"{name}: {live_stack.failure_report(INGEST, run['dag_run_id'])}")
            assert run["run_type"] == "backfill"
            states = live_stack.task_states(INGEST, run["dag_run_id"])
            assert set(states) >= {"wait_for_input", "extract", "stage", "validate", "merge", "archive"}
            assert set(states.values()) == {"success"}, (name, states)
    audit = history.rerun.audit
    assert sorted(audit) == [interval_of(day)[0] for day in ALL_DAYS]
    for day in ALL_DAYS:
        start, end = interval_of(day)
        interval_end, status, merged, checksum, _, _ = audit[start]
        assert (interval_end, status) == (end, "merged"), day
        assert merged >= 57 and checksum, (day, merged, checksum)  # 72 a day, 69 on the DST day, minus gaps
        assert (end - start) == timedelta(hours=23 if day == DST_DAY else 24)
    assert interval_of(ALL_DAYS[0])[0] == datetime(2013, 3, 8, 5, tzinfo=UTC)  # local midnight, EST
    assert interval_of(DST_DAY + timedelta(days=1))[0] == datetime(2013, 3, 11, 4, tzinfo=UTC)  # EDT


def test_score_and_monitor_cover_each_interval_exactly_once_in_order(live_stack, history: History) -> None:
    for name, phase, days in phases(history):
        starts = [interval_of(day)[0] for day in days]
        for dag_id, runs in ((SCORE, phase.score_runs), (MONITOR, phase.monitor_runs)):
            for run, _ in runs:
                if run["state"] != "success":
                    pytest.fail(f"{name}: {live_stack.failure_report(dag_id, run['dag_run_id'])}")
                assert run["run_type"] == "asset_triggered", (name, run)
            # runs in the order they were queued; each covered its intervals once, and in the nights' order
            in_order = [start for _, covered_by_run in runs for start in covered_by_run]
            assert in_order == starts, (name, dag_id, [(r["dag_run_id"], c) for r, c in runs])


def champion_at(stack, moment: datetime) -> str | None:
    """The champion at a moment, from the recorded moves (what the score step asks)."""
    from nightly_ml.db import load_sql

    (version, _), *_ = rows(
        stack.warehouse_url,
        load_sql("registry_champion_at.sql"),
        {"model_name": f"{DATASET}_model", "moment": moment},
    )
    return None if version is None else str(version)


def test_each_night_is_scored_and_judged_by_the_champion_of_that_night(live_stack, history: History) -> None:
    promoted = [p for p in history.promotions if p[1] == "promote"]
    assert promoted, (
        f"the bootstrap retraining promoted no champion: promotions {history.promotions}, retrain runs "
        + "\n".join(live_stack.failure_report(RETRAIN, r["dag_run_id"]) for r in history.retrain_runs)
    )
    # decided on the last bootstrap night's monitoring: in force from that interval's end
    assert promoted[0][3].astimezone(UTC) == interval_of(BOOTSTRAP_DAYS[-1])[1]
    scored = {
        row[0].astimezone(UTC): row[1:]
        for row in rows(
            live_stack.warehouse_url,
            "SELECT interval_start, model_version, rows FROM ops.scoring_runs WHERE dataset = %(d)s",
            {"d": DATASET},
        )
    }
    for day in BOOTSTRAP_DAYS:  # no champion on those nights; the later one trained on them
        assert interval_of(day)[0] not in scored, day
    for day in CHAMPION_DAYS:
        start, end = interval_of(day)
        version = champion_at(live_stack, end)
        assert version is not None and scored[start][0] == version, (day, version, scored.get(start))
        assert scored[start][1] > 0
    monitored = rows(
        live_stack.warehouse_url,
        "SELECT interval_start, run_id, champion_version, reference_start, reference_end, action "
        "FROM ops.monitoring_runs WHERE dataset = %(d)s",
        {"d": DATASET},
    )
    judged = {row[0].astimezone(UTC) for row in monitored}
    assert judged == {interval_of(day)[0] for day in CHAMPION_DAYS}, sorted(judged)
    for start, run_id, version, _, reference_end, action in monitored:
        # judged by the version that scored it, on a reference that ends before the interval
        assert version == scored[start.astimezone(UTC)][0], (start, run_id, version)
        assert reference_end <= start, (start, reference_end)
        assert action is not None, (start, run_id)


def test_a_rerun_keeps_the_monitoring_history_and_marks_the_current_one(live_stack, history: History) -> None:
    monitored = rows(
        live_stack.warehouse_url,
        "SELECT interval_start, run_id, is_current, champion_version FROM ops.monitoring_runs "
        "WHERE dataset = %(d)s ORDER BY interval_start, created_at",
        {"d": DATASET},
    )
    run_of = {
        name: {start: run["dag_run_id"] for run, starts in phase.monitor_runs for start in starts}
        for name, phase, _ in phases(history)
    }
    for day in CHAMPION_DAYS:
        start = interval_of(day)[0]
        kept = [(run_id, current, version) for s, run_id, current, version in monitored if s == start]
        assert [run_id for run_id, _, _ in kept] == [run_of["champion"][start], run_of["rerun"][start]], day
        assert [current for _, current, _ in kept] == [False, True], day
        assert kept[0][2] == kept[1][2], day  # the same champion of that night, both times


def test_a_second_backfill_reprocessing_completed_runs_gives_identical_checksums(history: History) -> None:
    first = {**history.bootstrap.audit, **history.champion.audit}
    second = history.rerun.audit
    assert sorted(second) == sorted(first) == [interval_of(day)[0] for day in ALL_DAYS]
    for start, (end, status, merged, checksum, finished_at, run_id) in second.items():
        before = first[start]
        assert (end, status, merged, checksum) == before[:4], start
        assert finished_at > before[4], f"{start}: not re-run (load_audit.finished_at unchanged)"
        assert run_id == before[5]  # the cleared backfill run, run again


def test_a_backfill_before_the_spec_start_date_fails_loudly(live_stack, history: History) -> None:
    # Observed on Airflow 3.3.2: the API accepts it (the timetable is not clamped to the DAG's start_date, and a
    # backfill run creates every task whatever its start_date); the runs are what must fail, saying why.
    assert history.before_start_refusal is None, history.before_start_refusal
    phase = history.before_start
    assert phase is not None
    assert [datetime.fromisoformat(r["logical_date"]).astimezone(ZONE).date() for r in phase.ingest_runs] == list(
        BEFORE_START
    )
    for run in phase.ingest_runs:
        assert run["state"] == "failed", run
        response = live_stack.api("GET", f"/api/v2/dags/{INGEST}/dagRuns/{run['dag_run_id']}/taskInstances")
        response.raise_for_status()
        instances = {ti["task_id"]: ti for ti in response.json()["task_instances"]}
        assert instances["wait_for_input"]["state"] == "failed", instances
        assert instances["merge"]["state"] == "upstream_failed", instances
        log = task_log(
            live_stack, INGEST, run["dag_run_id"], "wait_for_input", instances["wait_for_input"]["try_number"]
        )
        assert "before the spec's start_date 2013-03-08" in log, log[-3000:]
        assert "Set start_date in the spec" in log
    # nothing loaded for those days
    assert all(start >= interval_of(ALL_DAYS[0])[0] for start in phase.audit)
