"""The model card: a Markdown page logged with each model (data, candidates, metrics, slices, limits)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from nightly_ml.modeling.frames import label_values
from nightly_ml.modeling.training import TrainedCandidate
from nightly_ml.spec import Column, DatasetSpec

# --------------------------------------------------------------------------- reporting


def _fmt(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


def _domain(column: Column) -> str:
    if column.allowed:
        return ", ".join(column.allowed)
    if column.is_numeric:
        low = "-inf" if column.min is None else f"{column.min:g}"
        high = "inf" if column.max is None else f"{column.max:g}"
        return f"{low} to {high}"
    return ""


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def model_card(
    spec: DatasetSpec,
    *,
    best: TrainedCandidate,
    metrics: Mapping[str, float],
    slice_metrics: Mapping[str, Mapping[str, float]],
    baseline: Mapping[str, float],
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    window: tuple[datetime, datetime],
    candidates: Sequence[TrainedCandidate] = (),
    model_version: str | None = None,
) -> str:
    """A Markdown model card: data, window, features, chosen model, metrics overall and per slice, limits."""
    start, end = window
    holdout_start = (
        pd.to_datetime(holdout[spec.event_time], utc=True).min().to_pydatetime()
        if len(holdout)
        else end - timedelta(days=spec.training.holdout_days)
    )
    metric_names = list(metrics)
    labels = label_values(spec, pd.concat([train, holdout])) if len(train) + len(holdout) else np.array([])
    if spec.task == "classification":
        label_summary = f"positive rate {labels.mean():.3f}" if len(labels) else "no rows"
    else:
        label_summary = f"mean {labels.mean():.3f}, std {labels.std():.3f}" if len(labels) else "no rows"
    title = f"# Model card: {spec.registered_model_name}" + (f" v{model_version}" if model_version else "")
    lines = [
        title,
        "",
        f"**Dataset**: `{spec.name}` (spec version {spec.version}) — {spec.description or 'no description'}",
        f"**Task**: {spec.task} of `{spec.label.name}` ({label_summary})",
        f"**Training window**: {start.isoformat()} → {end.isoformat()} ({spec.training.window_days} days)",
        f"**Holdout**: the newest {spec.training.holdout_days} day(s), from {holdout_start.isoformat()}",
        f"**Rows**: {len(train)} training, {len(holdout)} holdout (labelled rows only)",
        "",
        "## Features",
        "",
        *_table(["name", "type", "range / values"], ([f"`{f.name}`", f.type, _domain(f)] for f in spec.features)),
        "",
        "## Model",
        "",
        f"Chosen candidate **{best.name}** (`{best.estimator}`), parameters `{best.params}`; "
        f"cross-validated {best.cv_metric} {_fmt(best.cv_score)} "
        f"({spec.training.cv_folds} time-ordered folds, seed {spec.training.seed}).",
    ]
    if candidates:
        lines += [
            "",
            *_table(
                ["candidate", "estimator", f"CV {spec.promotion.primary_metric}", "parameters"],
                ([c.name, c.estimator, _fmt(c.cv_score), f"`{c.params}`"] for c in candidates),
            ),
        ]
    lines += [
        "",
        "## Holdout metrics",
        "",
        *_table(
            ["metric", "model", "naive baseline"],
            ([m, _fmt(metrics[m]), _fmt(baseline.get(m, math.nan))] for m in metric_names),
        ),
        "",
        "Baseline: "
        + ("class prior (DummyClassifier)." if spec.task == "classification" else "training mean (DummyRegressor)."),
        "",
        "## Slices",
        "",
    ]
    if slice_metrics:
        lines += _table(
            ["slice", *metric_names],
            ([name, *(_fmt(values.get(m, math.nan)) for m in metric_names)] for name, values in slice_metrics.items()),
        )
    else:
        lines.append(
            f"No slice reached {spec.promotion.min_slice_rows} holdout rows "
            f"(slice columns: {list(spec.promotion.slices)})."
        )
    lines += [
        "",
        "## Limitations",
        "",
        "- Metrics come from the newest days of one window: they describe recent data, not future drift.",
        "- Only rows whose label had arrived are used; "
        f"slices under {spec.promotion.min_slice_rows} rows are not judged.",
        "- Rows outside the spec's ranges and categories are quarantined before training, so such inputs are unseen; "
        "unknown categories are encoded as all-zero.",
        "- Not assessed for fairness across groups beyond the listed slices.",
        "",
    ]
    return "\n".join(lines)
