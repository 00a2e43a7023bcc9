"""The rules generated from the spec: batch rules, row rules and soft distribution rules.

Batch rules are Great Expectations expectations on the staging table. Row rules are SQL predicates
(``broken``: true for a row that breaks the rule) evaluated for every column in the one scan that
materialises the typed table (etl/typed_tables.py); Great Expectations then checks each rule's
count of broken rows, and each soft rule's batch mean, in a one-row summary table (etl/validation.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from psycopg2 import sql

from nightly_ml.etl.staging import META_COLUMNS
from nightly_ml.etl.typed_tables import (
    MAX_FLOAT_CHARS,
    TYPE_PATTERNS,
    value_column,
)
from nightly_ml.spec import Column, DatasetSpec

# A string key is the warehouse table's primary key: a btree entry holds at most ~2700 bytes, so 512
# characters (of up to 4 bytes each) is the longest key every row can be indexed with.
MAX_KEY_CHARS = 512
MAX_IDENTIFIER = 63  # PostgreSQL truncates longer names
INT8_MIN, INT8_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class Rule:
    name: str
    column: str | None
    description: str
    expectation: Any = None  # batch rules: the GX expectation on the staging table
    hard: bool = True
    broken: sql.Composable | None = None  # row rules: true for a row that breaks the rule
    params: dict[str, Any] = field(default_factory=dict)  # bound parameters of ``broken``
    summary: str | None = None  # the summary table's column GX checks (set by summarised())
    summary_value: sql.Composable | None = None  # soft rules: the aggregate over the typed table

    @property
    def label(self) -> str:
        """How quarantine records and messages name the rule."""
        return f"{self.name}:{self.column}" if self.column else self.name


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


# Each predicate is what Great Expectations counted as an unexpected row for the rule's expectation:
# NULLs are never unexpected except for not_null.
def _null(column: str) -> sql.Composable:
    return sql.SQL("{} IS NULL").format(sql.Identifier(column))


def _untyped(column: str) -> sql.Composable:
    """The raw value does not match its type's pattern: typed_expression left it NULL."""
    return sql.SQL("{} IS NOT NULL AND {} IS NULL").format(sql.Identifier(column), sql.Identifier(value_column(column)))


def _longer(column: str, longest: int) -> sql.Composable:
    """More than ``longest`` characters. A text never has more characters than bytes, and its byte count is
    stored with it, so the characters are counted (a walk of the UTF-8 text) only past ``longest`` bytes."""
    return sql.SQL("octet_length({c}) > {n} AND char_length({c}) > {n}").format(
        c=sql.Identifier(column), n=sql.Literal(longest)
    )


def _bound(value: float, integral: bool, rounding: Callable[[float], int]) -> sql.Composable:
    """A bound as a literal of the column's type. An integer column (bigint) compared with a decimal literal
    converts every row's value to numeric; against the bound rounded inwards (``math.ceil`` for a low one,
    ``math.floor`` for a high one) an integer breaks it exactly when it breaks the decimal bound."""
    if integral and math.isfinite(value) and INT8_MIN <= rounding(value) <= INT8_MAX:
        return sql.SQL("{}::bigint").format(sql.Literal(rounding(value)))
    return sql.Literal(value)


def _outside(column: str, low: float | None, high: float | None, integral: bool = False) -> sql.Composable:
    value = sql.Identifier(value_column(column))
    checks = []
    if low is not None:
        checks.append(sql.SQL("{v} < {low}").format(v=value, low=_bound(low, integral, math.ceil)))
    if high is not None:
        checks.append(sql.SQL("{v} > {high}").format(v=value, high=_bound(high, integral, math.floor)))
    return sql.SQL("({})").format(sql.SQL(" OR ").join(checks))


def _column_rules(column: Column, position: int) -> list[Rule]:
    name = column.name
    rules: list[Rule] = []
    if not column.nullable:
        rules.append(Rule("not_null", name, f"{name} is required", broken=_null(name)))
    if column.type == "float":
        # NULL also for a matching value over MAX_FLOAT_CHARS (the length rule below): run the pattern then.
        broken = sql.SQL("{} AND (char_length({c}) <= {n} OR {c} !~ {p})").format(
            _untyped(name),
            c=sql.Identifier(name),
            n=sql.Literal(MAX_FLOAT_CHARS),
            p=sql.Literal(TYPE_PATTERNS["float"]),
        )
        rules.append(Rule("type", name, f"{name} must be float", broken=broken))
    elif column.type in TYPE_PATTERNS:
        rules.append(Rule("type", name, f"{name} must be {column.type}", broken=_untyped(name)))
    if column.type == "float":
        rules.append(
            Rule(
                "type",
                name,
                f"{name} must be float: at most {MAX_FLOAT_CHARS} characters (a longer number may not fit a double)",
                broken=_longer(name, MAX_FLOAT_CHARS),
            )
        )
    if column.is_numeric and (column.min is not None or column.max is not None):
        rules.append(
            Rule(
                "range",
                name,
                f"{name} must be within [{column.min}, {column.max}]",
                broken=_outside(name, column.min, column.max, integral=column.type == "integer"),
            )
        )
    if column.type == "category":
        allowed = list(column.allowed or ())
        placeholder = f"allowed_{position}"
        rules.append(
            Rule(
                "category",
                name,
                f"{name} must be one of {allowed}",
                broken=sql.SQL("{c} <> ALL({p}::text[])").format(
                    c=sql.Identifier(name), p=sql.Placeholder(placeholder)
                ),
                params={placeholder: allowed},
            )
        )
    return rules


def _lookback(spec: DatasetSpec) -> str:
    days = spec.validation.key_lookback_days
    return "" if days is None else f" starting at most {days} day(s) before this one, or later"


def row_rules(spec: DatasetSpec) -> list[Rule]:
    """The rules every row must keep; a row that breaks one is quarantined with it."""
    key, ts, label = spec.key.name, spec.event_time, spec.label
    flag = sql.Identifier
    rules = [
        Rule("not_null", key, f"{key} (the key) is required", broken=_null(key)),
        Rule("duplicate_key", key, f"{key} must be unique within the batch", broken=flag("_duplicate_key")),
        Rule(
            "key_in_other_interval",
            key,
            f"{key} must not already be in the warehouse under another interval{_lookback(spec)}",
            broken=flag("_key_in_other_interval"),
        ),
        Rule("not_null", ts, f"{ts} (the event time) is required", broken=_null(ts)),
        Rule(
            "type",
            ts,
            f"{ts} must be an ISO-8601 timestamp",
            broken=sql.SQL("{} IS NOT NULL AND _event_kind = 0").format(sql.Identifier(ts)),
        ),
        Rule(
            "outside_interval",
            ts,
            f"{ts} must be a valid time inside the run's data interval (a naive time is local to the spec's zone; "
            "one in the hour skipped by a DST change is not valid)",
            broken=sql.SQL("NOT {}").format(flag("_in_interval")),
        ),
    ]
    if spec.key.type == "string":
        rules.append(
            Rule(
                "key_length",
                key,
                f"{key} (the key) must be at most {MAX_KEY_CHARS} characters",
                broken=_longer(key, MAX_KEY_CHARS),
            )
        )
    if spec.key.type == "integer":
        rules.append(Rule("type", key, f"{key} must be integer", broken=_untyped(key)))
    for position, feature in enumerate(spec.features):
        rules.extend(_column_rules(feature, position))
    label_column = Column(name=label.name, type=label.type, nullable=True, min=label.min, max=label.max)
    rules.extend(_column_rules(label_column, len(spec.features)))
    return rules


def row_rule_gate(spec: DatasetSpec, rules: list[Rule]) -> list[sql.Composable]:
    """Predicates true together (OR) exactly when a row breaks one of ``rules`` (:func:`row_rules`), with fewer
    tests per row: the typed table tests them on every row, and which rules a row broke only for a row that
    broke one.

    - A column's ``not_null`` and ``type`` rules become ``<column>__value IS NULL``: a value is NULL when its
      text is (not_null) or does not read as its type (type; for a float also the one of over MAX_FLOAT_CHARS
      characters, whose value typed_expression leaves NULL too), and a value read is never NULL.
    - The event time's ``not_null``, ``type`` and ``outside_interval`` become ``_in_interval IS NOT TRUE``:
      ``_in_interval`` is NULL when the time is missing or unreadable (``_event_kind`` 0), else whether the
      valid time falls inside the interval (validation_typed_table.sql).
    """
    names: dict[str | None, set[str]] = {}
    for rule in rules:
        names.setdefault(rule.column, set()).add(rule.name)
    event_group = {"not_null", "type", "outside_interval"}
    value_group = {"not_null", "type"}
    gate: list[sql.Composable] = []
    folded: set[str | None] = set()  # columns whose group's predicate is in the gate
    for rule in rules:
        held = names[rule.column]
        if rule.column == spec.event_time and event_group <= held and rule.name in event_group:
            predicate: sql.Composable = sql.SQL("_in_interval IS NOT TRUE")
        elif rule.column != spec.event_time and value_group <= held and rule.name in value_group:
            predicate = sql.SQL("{} IS NULL").format(sql.Identifier(value_column(rule.column or "")))
        else:
            gate.append(rule.broken)
            continue
        if rule.column not in folded:
            folded.add(rule.column)
            gate.append(predicate)
    return gate


def soft_rules(spec: DatasetSpec, reference_profile: dict[str, tuple[float, float]] | None) -> list[Rule]:
    """Mean of each numeric feature within ``reference mean ± allowed deviation``.

    ``reference_profile`` maps a feature to (reference mean, allowed deviation): the deviation is
    calibrated on the spread of the reference's per-interval means at the spec's false-alarm
    rate, floored at ``validation.mean_shift_tolerance_sd`` row sds (see
    :func:`nightly_ml.tasks.ingest.reference_profile`).
    """
    if not reference_profile:
        return []
    rules = []
    for feature in spec.numeric_features:
        if feature.name not in reference_profile:
            continue
        mean, allowed = reference_profile[feature.name]
        low, high = mean - allowed, mean + allowed
        rules.append(
            Rule(
                "mean_shift",
                feature.name,
                f"mean of {feature.name} within {low:.4g}..{high:.4g} (reference {mean:.4g} ± {allowed:.4g}, "
                f"calibrated on per-interval means at a {spec.drift.false_alarm_rate:.2%} false-alarm rate)",
                hard=False,
                params={"min_value": low, "max_value": high},
                summary_value=sql.SQL("avg({})").format(sql.Identifier(value_column(feature.name))),
            )
        )
    return rules


def _summary_name(index: int, rule: Rule) -> str:
    text = re.sub(r"[^a-z0-9_]+", "_", rule.label.lower())
    return f"r{index:02d}_{text}"[:MAX_IDENTIFIER]


def summarised(rules: list[Rule]) -> list[Rule]:
    """The rules with their summary column and the GX expectation on it.

    A row rule's column holds how many rows broke it (expected: at most 0); a soft rule's column
    holds the batch mean it bounds. GX checks all of them in one query of a one-row table.
    """
    import great_expectations.expectations as gxe

    done = []
    for index, rule in enumerate(rules, start=1):
        name = _summary_name(index, rule)
        if rule.summary_value is not None:
            expectation = gxe.ExpectColumnMeanToBeBetween(column=name, **rule.params)
        else:
            expectation = gxe.ExpectColumnMaxToBeBetween(column=name, max_value=0)
        done.append(Rule(**{**rule.__dict__, "summary": name, "expectation": expectation}))
    return done
