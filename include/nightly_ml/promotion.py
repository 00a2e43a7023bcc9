"""The promotion gate: should a challenger replace the champion? Pure, no I/O.

:func:`decide` compares evaluations made on the same holdout. Its rules:

- the challenger must have a usable (present, not NaN) primary metric and guard metrics;
- no champion (or a champion whose primary metric is NaN, i.e. broken): the challenger must
  beat the naive baseline on the primary metric by the margin;
- with a champion: the primary metric must be better by ``min_improvement`` (absolute, or a
  fraction of the champion's value when ``relative``), in the metric's direction
  (``METRIC_GREATER_IS_BETTER``); a tie is never better;
- each guard metric may be worse than the champion's by at most its tolerance (absolute);
- each slice both sides have may lose at most ``slice_tolerance`` on the primary metric.

It explains itself: ``GateDecision.reasons`` starts with the verdict, then one sentence per
check with the numbers; the challenger is promoted only when every check passed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from nightly_ml.spec import METRIC_GREATER_IS_BETTER, PromotionGate

# Float noise must not turn a tie into a win or an exact margin into a miss.
_EPS = 1e-12


@dataclass(frozen=True)
class Evaluation:
    """Holdout metrics overall and per slice (``{"plan=basic": {"roc_auc": ...}}``)."""

    metrics: dict[str, float]
    slices: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class GateDecision:
    """``primary_delta`` is the challenger's improvement on the primary metric over the reference it was
    judged against (champion, or baseline when there is none), signed so that positive means better
    whatever the metric's direction; ``None`` when the challenger has no usable primary metric."""

    promote: bool
    reasons: tuple[str, ...]
    primary_delta: float | None


def _value(metrics: dict[str, float], name: str) -> float | None:
    """The metric as a float, or ``None`` when missing or NaN."""
    value = metrics.get(name)
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _num(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000 or abs(value) < 1e-4:
        return f"{value:.4g}"
    return f"{value:.4f}".rstrip("0").rstrip(".")


def _signed(value: float) -> str:
    return ("+" if value >= 0 else "-") + _num(abs(value))


def improvement(metric: str, challenger: float, reference: float) -> float:
    """How much better the challenger is (positive = better), whatever the metric's direction."""
    return challenger - reference if METRIC_GREATER_IS_BETTER[metric] else reference - challenger


def _beats(gate: PromotionGate, challenger: float, reference: float, against: str) -> tuple[bool, float, str]:
    """The margin rule on the primary metric: strictly better, and by at least the required margin."""
    metric = gate.primary_metric
    delta = improvement(metric, challenger, reference)
    required = gate.min_improvement * abs(reference) if gate.relative else gate.min_improvement
    how = f"{_signed(required)}" + (f" ({gate.min_improvement:.2%} of {_num(reference)})" if gate.relative else "")
    direction = "higher" if METRIC_GREATER_IS_BETTER[metric] else "lower"
    head = f"{metric} {_num(challenger)} vs {against} {_num(reference)}: {_signed(delta)}"
    if delta <= _EPS:
        verdict = "a tie is not an improvement" if abs(delta) <= _EPS else f"not better ({direction} is better)"
        return False, delta, f"{head}, {verdict}; required {how}."
    if delta < required - _EPS:
        return False, delta, f"{head} < required {how}."
    return True, delta, f"{head} ≥ required {how}."


def _guards(gate: PromotionGate, challenger: Evaluation, champion: Evaluation) -> tuple[bool, list[str]]:
    ok, reasons = True, []
    for metric, tolerance in gate.guard_metrics.items():
        new, old = _value(challenger.metrics, metric), _value(champion.metrics, metric)
        if new is None:  # checked up front; kept so this helper is safe on its own
            ok = False
            reasons.append(f"guard {metric}: the challenger has no value.")
            continue
        if old is None:
            reasons.append(f"guard {metric}: the champion has no value, so there is nothing to regress from.")
            continue
        worse = -improvement(metric, new, old)
        if worse > tolerance + _EPS:
            ok = False
            reasons.append(
                f"guard {metric} {_num(new)} vs champion {_num(old)}: worse by {_num(worse)} "
                f"> tolerance {_num(tolerance)}."
            )
        else:
            reasons.append(
                f"guard {metric} {_num(new)} vs champion {_num(old)}: "
                f"{'worse by ' + _num(worse) if worse > _EPS else 'no worse'}, within tolerance {_num(tolerance)}."
            )
    return ok, reasons


def _slices(gate: PromotionGate, challenger: Evaluation, champion: Evaluation) -> tuple[bool, list[str]]:
    ok, reasons = True, []
    metric = gate.primary_metric
    for name in sorted(set(challenger.slices) & set(champion.slices)):
        new, old = _value(challenger.slices[name], metric), _value(champion.slices[name], metric)
        if new is None or old is None:
            whose = "challenger" if new is None else "champion"
            reasons.append(f"slice {name}: the {whose} has no {metric} there (too few rows or one class); not judged.")
            continue
        loss = -improvement(metric, new, old)
        if loss > gate.slice_tolerance + _EPS:
            ok = False
            reasons.append(
                f"slice {name}: {metric} {_num(new)} vs champion {_num(old)}, worse by {_num(loss)} "
                f"> slice tolerance {_num(gate.slice_tolerance)}."
            )
        elif loss > _EPS:
            reasons.append(
                f"slice {name}: {metric} {_num(new)} vs champion {_num(old)}, worse by {_num(loss)} "
                f"within slice tolerance {_num(gate.slice_tolerance)}."
            )
    return ok, reasons


def decide(
    gate: PromotionGate, challenger: Evaluation, champion: Evaluation | None, baseline: Evaluation
) -> GateDecision:
    """Promote the challenger only if it passes every rule of ``gate`` (listed in the module docstring)."""
    metric = gate.primary_metric
    needed = [metric, *gate.guard_metrics]
    missing = [name for name in needed if _value(challenger.metrics, name) is None]
    if missing:
        shown = ", ".join(f"{name}={challenger.metrics.get(name, 'missing')}" for name in missing)
        return GateDecision(
            promote=False,
            reasons=(f"rejected: the challenger has no usable value for {shown}; the gate needs {needed}.",),
            primary_delta=None,
        )
    new = _value(challenger.metrics, metric)
    assert new is not None  # checked just above; narrows the type

    notes: list[str] = []
    if champion is not None and _value(champion.metrics, metric) is None:
        notes.append(
            f"the champion has no usable {metric} ({champion.metrics.get(metric, 'missing')}) on this holdout, "
            "so the challenger is judged against the naive baseline instead."
        )
        champion = None

    if champion is None:
        reference = _value(baseline.metrics, metric)
        if reference is None:
            summary = f"rejected: there is no champion and the baseline has no {metric} to beat."
            return GateDecision(False, (summary, *notes), None)
        passed, delta, sentence = _beats(gate, new, reference, "naive baseline")
        summary = (
            "promote: there is no champion and the challenger beats the naive baseline by the required margin."
            if passed
            else "rejected: there is no champion and the challenger does not beat the naive baseline by the "
            "required margin."
        )
        return GateDecision(passed, (summary, *notes, sentence), delta)

    old = _value(champion.metrics, metric)
    assert old is not None  # a champion without it was replaced by the baseline above
    primary_ok, delta, sentence = _beats(gate, new, old, "champion")
    guards_ok, guard_reasons = _guards(gate, challenger, champion)
    slices_ok, slice_reasons = _slices(gate, challenger, champion)
    promote = primary_ok and guards_ok and slices_ok
    failed = [
        name for name, ok in (("primary metric", primary_ok), ("guards", guards_ok), ("slices", slices_ok)) if not ok
    ]
    summary = "promote: every check passed." if promote else f"rejected: failed on {', '.join(failed)}."
    return GateDecision(promote, (summary, sentence, *guard_reasons, *slice_reasons), delta)
