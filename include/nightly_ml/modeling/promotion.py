"""The promotion gate: should a challenger replace the champion? Pure, no I/O.

:func:`decide` compares evaluations made on the same holdout. Its rules:

- the challenger must have a usable (present, not NaN) primary metric and guard metrics;
- it must beat the naive baseline on the primary metric by the margin — every promotion, not only
  the first: a model no better than "predict the prior/mean" must never serve;
- with a champion (one whose primary metric is NaN counts as broken, i.e. absent): the primary
  metric must be better by ``min_improvement`` (absolute, or a fraction of the champion's value when
  ``relative``), in the metric's direction (``METRIC_GREATER_IS_BETTER``); a tie is never better;
- *with confidence*: when both sides carry per-row holdout scores (:class:`HoldoutScores`), a
  paired block bootstrap (:mod:`nightly_ml.modeling.bootstrap`) must show the margin met in at least
  ``confidence`` of the resamples — a holdout of a few days is noisy, and a challenger that is
  better on average by less than that noise would replace the champion by a coin flip;
- each guard metric may be worse than the champion's by at most its tolerance (absolute);
- each slice both sides have may lose at most ``slice_tolerance`` on the primary metric.

Without per-row scores (summary metrics only) the margin is judged on the point estimate, and the
reasons say so. The bootstrap is seeded: the same inputs always give the same decision.

It explains itself: ``GateDecision.reasons`` starts with the verdict, then one sentence per
check with the numbers; the challenger is promoted only when every check passed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from nightly_ml.modeling.bootstrap import block_counts, resampled_metric
from nightly_ml.spec import METRIC_GREATER_IS_BETTER, PromotionGate

# Float noise must not turn a tie into a win or an exact margin into a miss.
_EPS = 1e-12


@dataclass(frozen=True, eq=False)
class HoldoutScores:
    """One model's predictions on the holdout rows, with their labels and the block each row belongs to.

    ``blocks`` are ids ``0 .. n_blocks - 1`` (a day of the holdout, or a time slice of one): the
    bootstrap resamples whole blocks. Two models are compared only on identical labels and blocks.
    """

    labels: np.ndarray
    predictions: np.ndarray
    blocks: np.ndarray
    block_note: str = ""  # how the blocks were cut, for the reasons ("3 day(s), each cut into 8 slices of 3 h")

    @property
    def n_blocks(self) -> int:
        return int(self.blocks.max()) + 1 if len(self.blocks) else 0

    def same_rows(self, other: HoldoutScores) -> bool:
        return np.array_equal(self.labels, other.labels) and np.array_equal(self.blocks, other.blocks)


@dataclass(frozen=True)
class Evaluation:
    """Holdout metrics overall and per slice (``{"plan=basic": {"roc_auc": ...}}``), and optionally the
    per-row scores behind them, which the gate needs to tell an improvement from noise."""

    metrics: dict[str, float]
    slices: dict[str, dict[str, float]] = field(default_factory=dict)
    holdout: HoldoutScores | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Confidence:
    """The paired bootstrap of one comparison: in what share of resamples the challenger beat the reference
    by the margin. ``p_value`` (= 1 - share) is the one-sided bootstrap p-value of "no better by the margin"."""

    against: str  # "champion" | "naive baseline"
    share: float
    required: float
    resamples: int
    blocks: int
    block_note: str

    @property
    def passed(self) -> bool:
        return self.share >= self.required - _EPS

    @property
    def p_value(self) -> float:
        return 1.0 - self.share


@dataclass(frozen=True)
class GateDecision:
    """``primary_delta`` is the challenger's improvement on the primary metric over the reference it was
    judged against (champion, or baseline when there is none), signed so that positive means better
    whatever the metric's direction; ``None`` when the challenger has no usable primary metric.
    ``margin`` is the improvement that was required (metric units); ``confidence`` the bootstrap against
    that reference and ``baseline_confidence`` the one against the naive baseline (``None``: not assessed)."""

    promote: bool
    reasons: tuple[str, ...]
    primary_delta: float | None
    margin: float | None = None
    confidence: Confidence | None = None
    baseline_confidence: Confidence | None = None


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


def _required(gate: PromotionGate, reference: float | np.ndarray) -> float | np.ndarray:
    """The margin in metric units: absolute, or a fraction of the reference's value."""
    return gate.min_improvement * np.abs(reference) if gate.relative else gate.min_improvement


def paired_confidence(
    gate: PromotionGate, challenger: HoldoutScores, reference: HoldoutScores, against: str, *, seed: int
) -> Confidence:
    """Share of block-bootstrap resamples of the holdout where the challenger beats ``reference`` by the margin.

    Both are scored on the same resampled rows (paired); the margin is taken from each resample's
    reference value when relative. A resample where the metric is undefined (one class) counts as a loss.
    """
    if not challenger.same_rows(reference):
        raise ValueError(f"challenger and {against} scores are not on the same holdout rows; a paired test needs both")
    metric = gate.primary_metric
    counts = block_counts(challenger.n_blocks, gate.bootstrap_resamples, seed)
    new = resampled_metric(metric, challenger.labels, challenger.predictions, challenger.blocks, counts)
    old = resampled_metric(metric, reference.labels, reference.predictions, reference.blocks, counts)
    delta = new - old if METRIC_GREATER_IS_BETTER[metric] else old - new
    with np.errstate(invalid="ignore"):
        wins = (delta > _EPS) & (delta >= _required(gate, old) - _EPS)  # NaN compares False
    return Confidence(
        against=against,
        share=float(wins.mean()),
        required=gate.confidence,
        resamples=gate.bootstrap_resamples,
        blocks=challenger.n_blocks,
        block_note=challenger.block_note,
    )


def _confidence_sentence(found: Confidence) -> str:
    cut = f" ({found.block_note})" if found.block_note else ""
    # Won every resample: the bootstrap can only say p is below its resolution.
    p_value = f"< {_num(1 / found.resamples)}" if found.p_value <= 0 else f"= {_num(found.p_value)}"
    head = (
        f"confidence vs {found.against}: the challenger beat it by the required margin in {found.share:.1%} of "
        f"{found.resamples} paired bootstrap resamples of {found.blocks} block(s){cut}, one-sided p {p_value}"
    )
    if found.passed:
        return f"{head}, ≥ required {found.required:.0%}."
    return f"{head}, < required {found.required:.0%}: on this holdout the difference cannot be told from noise."


@dataclass(frozen=True)
class _Comparison:
    """The challenger against one reference: the margin on the point estimate, then with confidence."""

    passed: bool
    delta: float
    margin: float
    confidence: Confidence | None
    reasons: tuple[str, ...]


def _compare(
    gate: PromotionGate, challenger: Evaluation, reference: Evaluation, new: float, old: float, against: str, seed: int
) -> _Comparison:
    point_ok, delta, sentence = _beats(gate, new, old, against)
    margin = float(_required(gate, old))
    if challenger.holdout is None or reference.holdout is None:
        note = (
            f"confidence vs {against} not assessed: no per-row holdout scores, "
            "so the margin is judged on the point estimate."
        )
        return _Comparison(point_ok, delta, margin, None, (sentence, note))
    found = paired_confidence(gate, challenger.holdout, reference.holdout, against, seed=seed)
    return _Comparison(point_ok and found.passed, delta, margin, found, (sentence, _confidence_sentence(found)))


def decide(
    gate: PromotionGate,
    challenger: Evaluation,
    champion: Evaluation | None,
    baseline: Evaluation,
    *,
    seed: int = 0,
) -> GateDecision:
    """Promote the challenger only if it passes every rule of ``gate`` (listed in the module docstring).

    ``seed`` seeds the bootstrap (pass the spec's training seed): the same inputs give the same decision.
    """
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

    floor = _value(baseline.metrics, metric)
    if champion is None:
        if floor is None:
            summary = f"rejected: there is no champion and the baseline has no {metric} to beat."
            return GateDecision(False, (summary, *notes), None)
        vs_baseline = _compare(gate, challenger, baseline, new, floor, "naive baseline", seed)
        summary = (
            "promote: there is no champion and the challenger beats the naive baseline by the required margin."
            if vs_baseline.passed
            else "rejected: there is no champion and the challenger does not beat the naive baseline by the "
            "required margin" + (" with the required confidence." if vs_baseline.confidence else ".")
        )
        return GateDecision(
            vs_baseline.passed,
            (summary, *notes, *vs_baseline.reasons),
            vs_baseline.delta,
            margin=vs_baseline.margin,
            confidence=vs_baseline.confidence,
            baseline_confidence=vs_baseline.confidence,
        )

    old = _value(champion.metrics, metric)
    assert old is not None  # a champion without it was replaced by the baseline above
    vs_champion = _compare(gate, challenger, champion, new, old, "champion", seed)
    if floor is None:
        vs_baseline = None
        baseline_reasons: tuple[str, ...] = (f"naive baseline: it has no {metric} on this holdout; not judged.",)
    else:
        vs_baseline = _compare(gate, challenger, baseline, new, floor, "naive baseline", seed)
        baseline_reasons = vs_baseline.reasons
        if not vs_baseline.passed and improvement(metric, old, floor) <= _EPS:
            baseline_reasons = (
                *baseline_reasons,
                f"the champion does not beat the naive baseline either ({metric} {_num(old)} vs {_num(floor)}): "
                "no model in the registry should be serving this data; look at the features and labels.",
            )
    guards_ok, guard_reasons = _guards(gate, challenger, champion)
    slices_ok, slice_reasons = _slices(gate, challenger, champion)
    checks = (
        ("primary metric vs champion", vs_champion.passed),
        ("naive baseline", vs_baseline is None or vs_baseline.passed),
        ("guards", guards_ok),
        ("slices", slices_ok),
    )
    failed = [name for name, ok in checks if not ok]
    summary = "promote: every check passed." if not failed else f"rejected: failed on {', '.join(failed)}."
    return GateDecision(
        not failed,
        (summary, *vs_champion.reasons, *baseline_reasons, *guard_reasons, *slice_reasons),
        vs_champion.delta,
        margin=vs_champion.margin,
        confidence=vs_champion.confidence,
        baseline_confidence=vs_baseline.confidence if vs_baseline else None,
    )
