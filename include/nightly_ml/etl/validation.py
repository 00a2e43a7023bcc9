"""Validation of a staged batch inside PostgreSQL: one scan classifies every row, Great Expectations judges.

The batch rules (schema, row count) are GX expectations on the staging table. The row rules are
evaluated for every column in the one statement that materialises the typed table; each bad row is
quarantined once per rule it broke. GX then checks, in a one-row summary table, each row rule's count
of broken rows and each soft rule's batch mean: its results and Data Docs show every rule.
"""

from __future__ import annotations

import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import psycopg2.extensions
from psycopg2 import sql

from nightly_ml import db, layout, storage
from nightly_ml.config import gx_connection_string, settings
from nightly_ml.etl import rejections
from nightly_ml.etl.quarantine import quarantine_broken_rows
from nightly_ml.etl.rules import Rule, batch_rules, row_rule_gate, row_rules, soft_rules, summarised
from nightly_ml.etl.staging import BatchRejected, StageResult, delimiter_hint
from nightly_ml.etl.typed_tables import bad_rows_table, create_typed_table, summary_table, typed_table
from nightly_ml.spec import DatasetSpec


@dataclass(frozen=True)
class RuleOutcome:
    rule: str
    column: str | None
    description: str
    success: bool
    unexpected_count: int
    hard: bool
    observed: Any = None


@dataclass
class ValidationReport:
    rows_in: int
    bad_rows: int
    bad_share: float
    outcomes: list[RuleOutcome]
    data_docs_url: str | None
    soft_failures: list[str] = field(default_factory=list)

    @property
    def failed_rules(self) -> list[RuleOutcome]:
        return [o for o in self.outcomes if not o.success]


class _GxRun:
    """An ephemeral GX context pointed at the warehouse, writing Data Docs for one run."""

    def __init__(self, spec: DatasetSpec, start: datetime) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        connection_string = gx_connection_string(db.sqlalchemy_url(settings().require_warehouse_url()))
        self.docs_target = layout.data_docs_dir(spec, start)
        # GX writes Data Docs only to a local disk: with a remote storage root, a temporary folder that
        # is published once the docs are built (and removed with this object), so workers keep nothing.
        self._scratch = None if storage.is_local(self.docs_target) else tempfile.TemporaryDirectory(prefix="gx-docs-")
        self.docs_dir = Path(self._scratch.name) if self._scratch else Path(self.docs_target)
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.site = "run_site"
        self.context.add_data_docs_site(
            self.site,
            {
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(self.docs_dir)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
        self.source = self.context.data_sources.add_postgres("warehouse", connection_string=connection_string)
        self.spec = spec
        self._docs_built = False

    def run(self, table: str, suite_name: str, rules: list[Rule]) -> list[tuple[Rule, Any]]:
        import great_expectations as gx

        asset = self.source.add_table_asset(table, table_name=table, schema_name="staging")
        batch = asset.add_batch_definition_whole_table("whole")
        suite = gx.ExpectationSuite(name=suite_name)
        for index, rule in enumerate(rules):
            rule.expectation.meta = {
                "rule": rule.name,
                "index": index,
                "description": rule.description,
                "notes": {"format": "string", "content": [f"{rule.label}: {rule.description}"]},
            }
            suite.add_expectation(rule.expectation)
        suite = self.context.suites.add(suite)
        definition = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{suite_name}_definition", data=batch, suite=suite)
        )
        checkpoint = self.context.checkpoints.add(
            gx.Checkpoint(
                name=f"{suite_name}_checkpoint",
                validation_definitions=[definition],
                result_format={"result_format": "SUMMARY", "partial_unexpected_count": 0},
            )
        )
        results = next(iter(checkpoint.run().run_results.values())).results
        by_index = {int(r.expectation_config.meta["index"]): r for r in results}
        return [(rule, by_index[i]) for i, rule in enumerate(rules)]

    def build_docs(self) -> None:
        """The Data Docs of every checkpoint this run made, in one build: GX compiles its page templates anew
        for each build (~0.3 s here), so one build after the last checkpoint instead of one per checkpoint."""
        if self._docs_built:
            return
        self.context.build_data_docs(site_names=[self.site])
        if self._scratch is not None:
            storage.publish_tree(self.docs_dir, self.docs_target)
        self._docs_built = True

    def close(self) -> None:
        """Close GX's connection pool now: each validation builds its own, and idle pools add up in a long
        process (a worker, the test suite) until PostgreSQL refuses new clients."""
        self.source.get_engine().dispose()

    def docs_url(self) -> str | None:
        index = self.docs_target / "index.html"
        return layout.public_url(index) if index.exists() else None


def _outcome(rule: Rule, result: Any) -> RuleOutcome:
    details = result.result or {}
    if result.exception_info and result.exception_info.get("raised_exception"):
        raise RuntimeError(
            f"rule {rule.name} on {rule.column}: GX failed: {result.exception_info['exception_message']}"
        )
    observed = details.get("observed_value")
    # A row rule's observed value (in the summary table) is its count of broken rows.
    broken = observed if rule.broken is not None else details.get("unexpected_count")
    return RuleOutcome(
        rule.name, rule.column, rule.description, bool(result.success), int(broken or 0), rule.hard, observed
    )


def _summarise(
    conn: psycopg2.extensions.connection, stage: StageResult, rules: list[Rule], row_rule_count: int
) -> None:
    """The one-row table GX reads: each row rule's count of bad rows, each soft rule's aggregate."""
    counts = sql.SQL(", ").join(
        sql.SQL("count(*) FILTER (WHERE _broken @> ARRAY[{}]::smallint[]) AS {}").format(
            sql.Literal(position), sql.Identifier(rule.summary)
        )
        for position, rule in enumerate(rules[:row_rule_count], start=1)
    )
    soft = [r for r in rules[row_rule_count:] if r.summary_value is not None]
    typed = sql.Identifier("staging", typed_table(stage))
    aggregates = (
        sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(sql.SQL("{} AS {}").format(r.summary_value, sql.Identifier(r.summary)) for r in soft),
            typed,
        )
        if soft
        else sql.SQL("SELECT")
    )
    statement = db.compose(
        "validation_rule_summary.sql",
        summary=sql.Identifier("staging", summary_table(stage)),
        bad=sql.Identifier("staging", bad_rows_table(stage)),
        counts=counts,
        aggregates=aggregates,
    )
    with conn.cursor() as cur:
        cur.execute(statement)


def _schema_message(spec: DatasetSpec, stage: StageResult) -> str:
    present = set(stage.columns)
    missing = [c for c in spec.input_columns if c not in present]
    extra = [c for c in stage.columns if c not in spec.input_columns]
    parts = []
    if missing:
        parts.append(f"missing column(s) {rejections.listed(missing)}")
    if extra:
        parts.append(f"unexpected column(s) {rejections.listed(extra)}")
    per_file = "; ".join(f"{f['file']}: {rejections.listed(list(f['columns']))}" for f in stage.files)
    hints = "".join(
        delimiter_hint(list(f["columns"]), spec.input_columns, getattr(spec.source, "delimiter", ","))
        for f in stage.files
    )
    return f"schema broken: {', '.join(parts)} (files: {per_file}).{hints}"


def validate(
    conn: psycopg2.extensions.connection,
    spec: DatasetSpec,
    stage: StageResult,
    start: datetime,
    end: datetime,
    run_id: str,
    reference_profile: dict[str, tuple[float, float]] | None = None,
) -> ValidationReport:
    """Run the batch and row rules; quarantine failing rows; raise BatchRejected on a batch failure.

    The caller commits; on BatchRejected the quarantine rows written so far stay for inspection.
    """
    context = {"dataset": spec.name, "start": start, "end": end, "run_id": run_id}
    gx_run = _GxRun(spec, start)
    try:
        return _validate(conn, spec, stage, start, end, gx_run, context, reference_profile)
    except BatchRejected:
        gx_run.build_docs()  # what was checked before the batch was rejected, for the alert's link
        raise
    finally:
        gx_run.close()


def _validate(
    conn: psycopg2.extensions.connection,
    spec: DatasetSpec,
    stage: StageResult,
    start: datetime,
    end: datetime,
    gx_run: _GxRun,
    context: dict[str, Any],
    reference_profile: dict[str, tuple[float, float]] | None,
) -> ValidationReport:
    hard = row_rules(spec)
    params = {k: v for rule in hard for k, v in rule.params.items()}
    broken = [r.broken for r in hard]
    make_typed_table = partial(
        create_typed_table, conn, spec, stage, start, end, broken, params, gate=row_rule_gate(spec, hard)
    )
    # The batch rules read the staging table on GX's own connection: a batch that has the spec's columns and
    # rows is typed meanwhile on this one, on a thread of its own (its first statement, the duplicate-key
    # scan, runs on one core while GX works on the other). Leaving the block waits for it, also when the
    # batch rules reject the batch.
    typable = stage.rows_staged > 0 and set(stage.columns) == set(spec.input_columns)
    with ThreadPoolExecutor(1, thread_name_prefix="nightly_ml-typed") as pool:
        building = pool.submit(make_typed_table) if typable else None
        table_results = [
            _outcome(r, res) for r, res in gx_run.run(stage.rows_table, f"{spec.name}_batch", batch_rules(spec))
        ]
    rows_in = stage.rows_in
    for outcome in table_results:
        if not outcome.success and outcome.rule == "schema":
            raise BatchRejected(_schema_message(spec, stage))
    if rows_in == 0:
        raise BatchRejected(rejections.empty_batch(spec, stage, start, end))
    rejections.check_unreadable_lines(spec, stage)
    for outcome in table_results:
        if not outcome.success and outcome.rule == "row_count":
            raise BatchRejected(
                f"too few rows: {outcome.observed} staged from {stage.file_names}, the spec requires at least "
                f"{spec.validation.min_rows}"
            )

    if building is None:
        make_typed_table()
    else:
        building.result()  # its error, if it had one
    rules = summarised(hard + soft_rules(spec, reference_profile))
    _summarise(conn, stage, rules, len(hard))
    with conn.cursor() as cur:
        quarantine_broken_rows(cur, stage, hard, context)
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("staging", bad_rows_table(stage))))
        bad_rows = int(cur.fetchone()[0]) + stage.rows_in - stage.rows_staged
    conn.commit()

    outcomes = [_outcome(rule, result) for rule, result in gx_run.run(summary_table(stage), f"{spec.name}_rows", rules)]
    gx_run.build_docs()
    bad_share = bad_rows / rows_in
    report = ValidationReport(
        rows_in=rows_in,
        bad_rows=bad_rows,
        bad_share=bad_share,
        outcomes=table_results + outcomes,
        data_docs_url=gx_run.docs_url(),
        soft_failures=[o.description for o in outcomes if not o.success and not o.hard],
    )
    if bad_share > spec.validation.max_bad_row_fraction:
        broken = ", ".join(f"{o.rule}:{o.column} ({o.unexpected_count})" for o in outcomes if not o.success and o.hard)
        unreadable = stage.rows_in - stage.rows_staged
        raise BatchRejected(
            f"too many bad rows: {bad_rows} of {rows_in} ({bad_share:.1%}) broke a rule, above the spec's "
            f"limit of {spec.validation.max_bad_row_fraction:.1%}; rules: {broken or 'none'}"
            + (f"; unreadable lines: {unreadable}" if unreadable else "")
            + f"; files: {stage.file_names}"
        )
    return report


IntervalMoments = tuple[int, float, float]  # non-null rows, mean, population variance of one interval


def reference_profile_from_warehouse(
    conn: psycopg2.extensions.connection, spec: DatasetSpec, reference_start: datetime, reference_end: datetime
) -> dict[str, list[IntervalMoments]]:
    """Per-interval rows, mean and variance of each numeric feature over the champion's training window.

    One scan for every feature. Intervals (not rows) are what the soft mean-shift tolerance is
    calibrated on: the rows of one interval share its circumstances (one day's weather), so a
    batch mean moves with the spread of interval means, far more than the row sd suggests.
    """
    features = spec.numeric_features
    if not features:
        return {}
    aggregates = sql.SQL(", ").join(
        sql.SQL("count({c}), avg({c}), var_pop({c})").format(c=sql.Identifier(f.name)) for f in features
    )
    statement = db.compose(
        "validation_reference_profile.sql",
        aggregates=aggregates,
        table=db.warehouse_table(spec),
        event_time=spec.event_time,
    )
    with conn.cursor() as cur:
        cur.execute(statement, {"start": reference_start, "end": reference_end})
        rows = cur.fetchall()
    profile: dict[str, list[IntervalMoments]] = {}
    for i, feature in enumerate(features):
        found = [(int(r[1 + 3 * i]), r[2 + 3 * i], r[3 + 3 * i]) for r in rows]
        moments = [(n, float(mean), float(var)) for n, mean, var in found if n > 0 and mean is not None]
        if moments:
            profile[feature.name] = moments
    return profile


def data_docs_index(spec: DatasetSpec, start: datetime) -> storage.StoragePath:
    return layout.data_docs_index(spec, start)
