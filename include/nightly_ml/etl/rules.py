"""The expectations generated from the spec: batch rules, row rules and soft distribution rules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nightly_ml.etl.staging import META_COLUMNS
from nightly_ml.etl.typed_tables import (
    INTEGER_PATTERN,
    MAX_FLOAT_CHARS,
    TIMESTAMP_PATTERN,
    TYPE_PATTERNS,
    value_column,
)
from nightly_ml.spec import Column, DatasetSpec

# A string key is the warehouse table's primary key: a btree entry holds at most ~2700 bytes, so 512
# characters (of up to 4 bytes each) is the longest key every row can be indexed with.
MAX_KEY_CHARS = 512


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
    if column.type == "float":
        rules.append(
            Rule(
                "type",
                name,
                f"{name} must be float: at most {MAX_FLOAT_CHARS} characters (a longer number may not fit a double)",
                gxe.ExpectColumnValueLengthsToBeBetween(column=name, max_value=MAX_FLOAT_CHARS),
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
            f"{ts} must be a valid time inside the run's data interval (a naive time is local to the spec's zone; "
            "one in the hour skipped by a DST change is not valid)",
            gxe.ExpectColumnValuesToBeInSet(column="_in_interval", value_set=[True]),
        ),
    ]
    if spec.key.type == "string":
        rules.append(
            Rule(
                "key_length",
                key,
                f"{key} (the key) must be at most {MAX_KEY_CHARS} characters",
                gxe.ExpectColumnValueLengthsToBeBetween(column=key, max_value=MAX_KEY_CHARS),
            )
        )
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
    """Mean of each numeric feature within ``reference mean ± allowed deviation``.

    ``reference_profile`` maps a feature to (reference mean, allowed deviation): the deviation is
    calibrated on the spread of the reference's per-interval means at the spec's false-alarm
    rate, floored at ``validation.mean_shift_tolerance_sd`` row sds (see
    :func:`nightly_ml.tasks.ingest.reference_profile`).
    """
    import great_expectations.expectations as gxe

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
                gxe.ExpectColumnMeanToBeBetween(column=value_column(feature.name), min_value=low, max_value=high),
                hard=False,
            )
        )
    return rules
