"""Validate: Great Expectations suites generated from the spec, run inside PostgreSQL.

Two passes over the staging table:

1. **Batch rules** (schema matches the spec, enough rows): a failure rejects the batch.
2. **Row rules** on a typed copy of the staging table (types, nulls, ranges, categories,
   key unique in the batch and new to the warehouse, event time inside the interval):
   GX returns, for each failed rule, the SQL selecting the failing rows; those rows go to
   ``ops.quarantine`` with the rule. If the share of bad rows exceeds the spec's threshold
   the batch is rejected too.

Soft rules (a numeric feature's mean far from the champion's reference) never quarantine;
they are reported so that the monitor can branch into retraining.

Data Docs are built for every run, in ``reports/data_docs/<dataset>/<partition>/``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg2.extensions
from psycopg2 import sql

from nightly_ml import db
from nightly_ml.config import settings
from nightly_ml.sources import partition_name
from nightly_ml.spec import Column, DatasetSpec
from nightly_ml.staging import META_COLUMNS, BadLine, BatchRejected, StageResult, delimiter_hint

INTEGER_PATTERN = r"^\s*[+-]?[0-9]{1,18}\s*$"
FLOAT_PATTERN = r"^\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]{1,2})?\s*$"
BOOLEAN_PATTERN = r"^\s*([Tt]([Rr][Uu][Ee])?|[Ff]([Aa][Ll][Ss][Ee])?|0|1|[Yy]([Ee][Ss])?|[Nn][Oo]?)\s*$"
TIMESTAMP_PATTERN = (
    r"^\s*[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?)?"
    r"\s*(Z|[+-][0-9]{2}(:?[0-9]{2})?)?\s*$"
)
TYPE_PATTERNS = {"integer": INTEGER_PATTERN, "float": FLOAT_PATTERN, "boolean": BOOLEAN_PATTERN}
PG_CASTS = {"integer": "bigint", "float": "double precision", "boolean": "boolean"}


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


def typed_table(stage: StageResult) -> str:
    return f"{stage.rows_table}__v"


def bad_rows_table(stage: StageResult) -> str:
    return f"{stage.rows_table}__bad"


def value_column(name: str) -> str:
    return f"{name}__value"


def typed_expression(name: str, kind: str) -> sql.Composable:
    raw = sql.Identifier(name)
    if kind in TYPE_PATTERNS:
        return sql.SQL("CASE WHEN {raw} ~ {pattern} THEN trim({raw})::{cast} END").format(
            raw=raw, pattern=sql.Literal(TYPE_PATTERNS[kind]), cast=sql.SQL(PG_CASTS[kind])
        )
    return raw


def create_typed_table(
    conn: psycopg2.extensions.connection, spec: DatasetSpec, stage: StageResult, start: datetime, end: datetime
) -> None:
    """A typed copy of the staging table: a ``<column>__value`` beside each raw column."""
    items: list[sql.Composable] = [sql.SQL("s.*")]
    key_kind = "integer" if spec.key.type == "integer" else "string"
    items.append(
        sql.SQL("{} AS {}").format(
            typed_expression(spec.key.name, key_kind), sql.Identifier(value_column(spec.key.name))
        )
    )
    items.append(
        sql.SQL("ops.try_timestamptz(CASE WHEN {raw} ~ {pattern} THEN {raw} END) AS {alias}").format(
            raw=sql.Identifier(spec.event_time),
            pattern=sql.Literal(TIMESTAMP_PATTERN),
            alias=sql.Identifier(value_column(spec.event_time)),
        )
    )
    for feature in spec.features:
        items.append(
            sql.SQL("{} AS {}").format(
                typed_expression(feature.name, feature.type), sql.Identifier(value_column(feature.name))
            )
        )
    items.append(
        sql.SQL("{} AS {}").format(
            typed_expression(spec.label.name, spec.label.type), sql.Identifier(value_column(spec.label.name))
        )
    )
    typed = sql.SQL("SELECT {items} FROM {staging} AS s").format(
        items=sql.SQL(", ").join(items), staging=sql.Identifier("staging", stage.rows_table)
    )
    statement = db.compose(
        "validation_typed_table.sql",
        typed=sql.Identifier("staging", typed_table(stage)),
        typed_select=typed,
        event_time=spec.event_time,
        timestamp_pattern=sql.Literal(TIMESTAMP_PATTERN),
        event_time_value=value_column(spec.event_time),
        key=spec.key.name,
        key_value=value_column(spec.key.name),
        warehouse=db.warehouse_table(spec),
    )
    with conn.cursor() as cur:
        cur.execute(statement, {"start": start, "end": end})


@dataclass(frozen=True)
class Rule:
    name: str
    column: str | None
    description: str
    expectation: Any
    hard: bool = True


def batch_rules(spec: DatasetSpec) -> list[Rule]:
    import great_expectations.expectations as gxe

    expected = [*META_COLUMNS, *spec.input_columns]
    return [
        Rule(
            "schema",
            None,
            f"columns are exactly {spec.input_columns}",
            gxe.ExpectTableColumnsToMatchSet(column_set=expected, exact_match=True),
        ),
        Rule(
            "row_count",
            None,
            f"at least {spec.validation.min_rows} rows",
            gxe.ExpectTableRowCountToBeBetween(min_value=spec.validation.min_rows),
        ),
    ]


def _column_rules(column: Column) -> list[Rule]:
    import great_expectations.expectations as gxe

    name = column.name
    rules: list[Rule] = []
    if not column.nullable:
        rules.append(Rule("not_null", name, f"{name} is required", gxe.ExpectColumnValuesToNotBeNull(column=name)))
    if column.type in TYPE_PATTERNS:
        rules.append(
            Rule(
                "type",
                name,
                f"{name} must be {column.type}",
                gxe.ExpectColumnValuesToMatchRegex(column=name, regex=TYPE_PATTERNS[column.type]),
            )
        )
    if column.is_numeric and (column.min is not None or column.max is not None):
        rules.append(
            Rule(
                "range",
                name,
                f"{name} must be within [{column.min}, {column.max}]",
                gxe.ExpectColumnValuesToBeBetween(
                    column=value_column(name), min_value=column.min, max_value=column.max
                ),
            )
        )
    if column.type == "category":
        rules.append(
            Rule(
                "category",
                name,
                f"{name} must be one of {list(column.allowed or ())}",
                gxe.ExpectColumnValuesToBeInSet(column=name, value_set=list(column.allowed or ())),
            )
        )
    return rules


def row_rules(spec: DatasetSpec) -> list[Rule]:
    import great_expectations.expectations as gxe

    key, ts, label = spec.key.name, spec.event_time, spec.label
    rules = [
        Rule("not_null", key, f"{key} (the key) is required", gxe.ExpectColumnValuesToNotBeNull(column=key)),
        Rule(
            "duplicate_key", key, f"{key} must be unique within the batch", gxe.ExpectColumnValuesToBeUnique(column=key)
        ),
        Rule(
            "key_in_other_interval",
            key,
            f"{key} must not already be in the warehouse under another interval",
            gxe.ExpectColumnValuesToBeInSet(column="_key_in_other_interval", value_set=[False]),
        ),
        Rule("not_null", ts, f"{ts} (the event time) is required", gxe.ExpectColumnValuesToNotBeNull(column=ts)),
        Rule(
            "type",
            ts,
            f"{ts} must be an ISO-8601 timestamp",
            gxe.ExpectColumnValuesToMatchRegex(column=ts, regex=TIMESTAMP_PATTERN),
        ),
        Rule(
            "outside_interval",
            ts,
            f"{ts} must be a valid time inside the run's data interval",
            gxe.ExpectColumnValuesToBeInSet(column="_in_interval", value_set=[True]),
        ),
    ]
    if spec.key.type == "integer":
        rules.append(
            Rule(
                "type",
                key,
                f"{key} must be integer",
                gxe.ExpectColumnValuesToMatchRegex(column=key, regex=INTEGER_PATTERN),
            )
        )
    for feature in spec.features:
        rules.extend(_column_rules(feature))
    label_column = Column(name=label.name, type=label.type, nullable=True, min=label.min, max=label.max)
    rules.extend(_column_rules(label_column))
    return rules


def soft_rules(spec: DatasetSpec, reference_profile: dict[str, tuple[float, float]] | None) -> list[Rule]:
    """Mean of each numeric feature within ``tolerance`` reference standard deviations."""
    import great_expectations.expectations as gxe

    if not reference_profile:
        return []
    tolerance = spec.validation.mean_shift_tolerance_sd
    rules = []
    for feature in spec.numeric_features:
        if feature.name not in reference_profile:
            continue
        mean, sd = reference_profile[feature.name]
        low, high = mean - tolerance * sd, mean + tolerance * sd
        rules.append(
            Rule(
                "mean_shift",
                feature.name,
                f"mean of {feature.name} within {low:.4g}..{high:.4g} (reference {mean:.4g} ± {tolerance} sd)",
                gxe.ExpectColumnMeanToBeBetween(column=value_column(feature.name), min_value=low, max_value=high),
                hard=False,
            )
        )
    return rules


class _GxRun:
    """An ephemeral GX context pointed at the warehouse, writing Data Docs for one run."""

    def __init__(self, spec: DatasetSpec, start: datetime) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        # GX refuses literal connection strings and hostless (Unix-socket) URLs, but accepts
        # a ${VAR} template, resolved from the environment when it connects.
        os.environ["NIGHTLY_ML_GX_WAREHOUSE_URL"] = db.sqlalchemy_url(settings().require_warehouse_url())
        self.docs_dir = settings().reports_dir / "data_docs" / spec.name / partition_name(start)
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
        self.source = self.context.data_sources.add_postgres(
            "warehouse", connection_string="${NIGHTLY_ML_GX_WAREHOUSE_URL}"
        )
        self.spec = spec

    def run(self, table: str, suite_name: str, rules: list[Rule]) -> list[tuple[Rule, Any]]:
        import great_expectations as gx

        asset = self.source.add_table_asset(table, table_name=table, schema_name="staging")
        batch = asset.add_batch_definition_whole_table("whole")
        suite = gx.ExpectationSuite(name=suite_name)
        for index, rule in enumerate(rules):
            rule.expectation.meta = {"rule": rule.name, "index": index, "description": rule.description}
            suite.add_expectation(rule.expectation)
        suite = self.context.suites.add(suite)
        definition = self.context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{suite_name}_definition", data=batch, suite=suite)
        )
        checkpoint = self.context.checkpoints.add(
            gx.Checkpoint(
                name=f"{suite_name}_checkpoint",
                validation_definitions=[definition],
                actions=[gx.checkpoint.actions.UpdateDataDocsAction(name="docs", site_names=[self.site])],
                result_format={
                    "result_format": "COMPLETE",
                    "unexpected_index_column_names": ["_row_id"],
                    "return_unexpected_index_query": True,
                    "partial_unexpected_count": 0,
                },
            )
        )
        results = next(iter(checkpoint.run().run_results.values())).results
        by_index = {int(r.expectation_config.meta["index"]): r for r in results}
        return [(rule, by_index[i]) for i, rule in enumerate(rules)]

    def docs_url(self) -> str | None:
        index = self.docs_dir / "index.html"
        return index.as_uri() if index.exists() else None


def _outcome(rule: Rule, result: Any) -> RuleOutcome:
    details = result.result or {}
    if result.exception_info and result.exception_info.get("raised_exception"):
        raise RuntimeError(
            f"rule {rule.name} on {rule.column}: GX failed: {result.exception_info['exception_message']}"
        )
    return RuleOutcome(
        rule.name,
        rule.column,
        rule.description,
        bool(result.success),
        int(details.get("unexpected_count") or 0),
        rule.hard,
        details.get("observed_value"),
    )


def _schema_message(spec: DatasetSpec, stage: StageResult) -> str:
    present = set(stage.columns)
    missing = [c for c in spec.input_columns if c not in present]
    extra = [c for c in stage.columns if c not in spec.input_columns]
    parts = []
    if missing:
        parts.append(f"missing column(s) {missing}")
    if extra:
        parts.append(f"unexpected column(s) {extra}")
    per_file = "; ".join(f"{f['file']}: {f['columns']}" for f in stage.files)
    hints = "".join(
        delimiter_hint(list(f["columns"]), spec.input_columns, getattr(spec.source, "delimiter", ","))
        for f in stage.files
    )
    return f"schema broken: {', '.join(parts)} (files: {per_file}).{hints}"


def _quarantine_rows(
    cur: psycopg2.extensions.cursor,
    spec: DatasetSpec,
    stage: StageResult,
    rule: Rule,
    gx_query: str,
    context: dict[str, Any],
) -> None:
    failing = sql.SQL(gx_query.strip().rstrip(";").replace("%", "%%"))
    cur.execute(
        db.compose(
            "quarantine_rows.sql",
            staging=sql.Identifier("staging", stage.rows_table),
            bad=sql.Identifier("staging", bad_rows_table(stage)),
            failing_rows=failing,
        ),
        {**context, "rule": f"{rule.name}:{rule.column}" if rule.column else rule.name, "detail": rule.description},
    )


def quarantine_bad_lines(
    conn: psycopg2.extensions.connection,
    spec: DatasetSpec,
    start: datetime,
    end: datetime,
    run_id: str,
    bad_lines: list[BadLine],
) -> None:
    """Replace the interval's quarantine with the lines the loader could not read."""
    context = {"dataset": spec.name, "start": start, "end": end, "run_id": run_id}
    with conn.cursor() as cur:
        cur.execute(db.load_sql("quarantine_clear.sql"), context)
        _insert_bad_lines(cur, bad_lines, context)


def _insert_bad_lines(cur: psycopg2.extensions.cursor, bad_lines: list[BadLine], context: dict[str, Any]) -> None:
    from psycopg2.extras import execute_batch

    execute_batch(
        cur,
        db.load_sql("quarantine_line.sql"),
        [
            {
                **context,
                "source_file": line.source_file,
                "line_number": line.line_number,
                "rule": line.rule,
                "detail": line.detail,
                "raw_line": line.raw_line,
            }
            for line in bad_lines
        ],
        page_size=1000,
    )


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
    table_results = [
        _outcome(r, res) for r, res in gx_run.run(stage.rows_table, f"{spec.name}_batch", batch_rules(spec))
    ]
    rows_in = stage.rows_in
    for outcome in table_results:
        if not outcome.success and outcome.rule == "schema":
            raise BatchRejected(_schema_message(spec, stage))
    if rows_in == 0:
        raise BatchRejected(f"empty batch: no rows for {spec.name} in [{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M})")
    for outcome in table_results:
        if not outcome.success and outcome.rule == "row_count":
            raise BatchRejected(
                f"too few rows: {outcome.observed} staged, the spec requires at least {spec.validation.min_rows}"
            )

    create_typed_table(conn, spec, stage, start, end)
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("DROP TABLE IF EXISTS {bad}; CREATE UNLOGGED TABLE {bad} (_row_id bigint PRIMARY KEY)").format(
                bad=sql.Identifier("staging", bad_rows_table(stage))
            )
        )
    conn.commit()

    rules = row_rules(spec) + soft_rules(spec, reference_profile)
    checked = gx_run.run(typed_table(stage), f"{spec.name}_rows", rules)
    outcomes = [_outcome(rule, result) for rule, result in checked]
    with conn.cursor() as cur:
        for (rule, result), outcome in zip(checked, outcomes, strict=True):
            if outcome.success or not rule.hard:
                continue
            query = (result.result or {}).get("unexpected_index_query")
            if not query:
                raise RuntimeError(f"GX returned no query for the failing rows of rule {rule.name} on {rule.column}")
            _quarantine_rows(cur, spec, stage, rule, query, context)
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("staging", bad_rows_table(stage))))
        bad_rows = int(cur.fetchone()[0]) + stage.rows_in - stage.rows_staged
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
        )
    return report


def reference_profile_from_warehouse(
    conn: psycopg2.extensions.connection, spec: DatasetSpec, reference_start: datetime, reference_end: datetime
) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation of each numeric feature over the champion's training window."""
    if not spec.numeric_features:
        return {}
    aggregates = sql.SQL(", ").join(
        sql.SQL("avg({c}), stddev_samp({c})").format(c=sql.Identifier(f.name)) for f in spec.numeric_features
    )
    with conn.cursor() as cur:
        cur.execute(
            sql.SQL("SELECT {aggs} FROM {table} WHERE {ts} >= %(start)s AND {ts} < %(end)s").format(
                aggs=aggregates, table=db.warehouse_table(spec), ts=sql.Identifier(spec.event_time)
            ),
            {"start": reference_start, "end": reference_end},
        )
        row = cur.fetchone()
    profile = {}
    for i, feature in enumerate(spec.numeric_features):
        mean, sd = row[2 * i], row[2 * i + 1]
        if mean is not None and sd is not None:
            profile[feature.name] = (float(mean), float(sd))
    return profile


def data_docs_index(spec: DatasetSpec, start: datetime) -> Path:
    return settings().reports_dir / "data_docs" / spec.name / partition_name(start) / "index.html"
