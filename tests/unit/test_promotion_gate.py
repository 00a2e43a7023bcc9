"""The promotion gate, table-driven: each row is one situation the nightly run can meet."""

from __future__ import annotations

import math

import pytest

from nightly_ml.modeling.promotion import Evaluation, GateDecision, decide
from nightly_ml.spec import PromotionGate

NAN = math.nan

# Shaped like include/specs/churn.yaml and demand.yaml.
AUC_GATE = PromotionGate(
    primary_metric="roc_auc", min_improvement=0.002, guard_metrics={"log_loss": 0.01}, slice_tolerance=0.03
)
RMSE_GATE = PromotionGate(
    primary_metric="rmse", min_improvement=0.01, relative=True, guard_metrics={"mae": 0.5}, slice_tolerance=1.0
)


def auc(roc_auc: float, log_loss: float = 0.40, **slices: float) -> Evaluation:
    return Evaluation(
        metrics={"roc_auc": roc_auc, "log_loss": log_loss, "accuracy": 0.8},
        slices={f"plan={name}": {"roc_auc": value} for name, value in slices.items()},
    )


def rmse(value: float, mae: float = 5.0, **slices: float) -> Evaluation:
    return Evaluation(
        metrics={"rmse": value, "mae": mae, "r2": 0.5},
        slices={f"zone={name}": {"rmse": v} for name, v in slices.items()},
    )


AUC_BASELINE = auc(0.5, log_loss=0.5)
RMSE_BASELINE = rmse(13.0, mae=9.0)

# fmt: off
CASES = [
    # gate, challenger, champion, baseline, promote?, phrase in the reasons, primary_delta, id
    pytest.param(AUC_GATE, auc(0.80), None, AUC_BASELINE, True,
                 "vs naive baseline 0.5: +0.3 ≥ required +0.002", 0.30,
                 id="no-champion-beats-baseline"),
    pytest.param(AUC_GATE, auc(0.501), None, AUC_BASELINE, False,
                 "< required +0.002", 0.001,
                 id="no-champion-not-beating-baseline-by-margin"),
    pytest.param(AUC_GATE, auc(0.45), None, AUC_BASELINE, False,
                 "not better", -0.05,
                 id="no-champion-worse-than-baseline"),
    pytest.param(AUC_GATE, auc(0.806), auc(0.806), AUC_BASELINE, False,
                 "a tie is not an improvement", 0.0,
                 id="tie"),
    pytest.param(AUC_GATE, auc(0.812), auc(0.806), AUC_BASELINE, True,
                 "roc_auc 0.812 vs champion 0.806: +0.006 ≥ required +0.002", 0.006,
                 id="better-absolute-margin"),
    pytest.param(AUC_GATE, auc(0.807), auc(0.806), AUC_BASELINE, False,
                 "+0.001 < required +0.002", 0.001,
                 id="better-but-below-absolute-margin"),
    pytest.param(AUC_GATE, auc(0.808), auc(0.806), AUC_BASELINE, True,
                 "≥ required +0.002", 0.002,
                 id="exactly-the-margin"),
    pytest.param(RMSE_GATE, rmse(10.0), rmse(10.5), RMSE_BASELINE, True,
                 "rmse 10 vs champion 10.5: +0.5 ≥ required +0.105 (1.00% of 10.5)", 0.5,
                 id="better-relative-margin"),
    pytest.param(RMSE_GATE, rmse(10.45), rmse(10.5), RMSE_BASELINE, False,
                 "+0.05 < required +0.105", 0.05,
                 id="better-but-below-relative-margin"),
    pytest.param(RMSE_GATE, rmse(11.0), rmse(10.5), RMSE_BASELINE, False,
                 "not better (lower is better)", -0.5,
                 id="lower-is-better-worse"),
    pytest.param(RMSE_GATE, rmse(8.0), None, RMSE_BASELINE, True,
                 "vs naive baseline 13", 5.0,
                 id="lower-is-better-no-champion"),
    pytest.param(AUC_GATE, auc(0.83, log_loss=0.42), auc(0.806, log_loss=0.40), AUC_BASELINE, False,
                 "guard log_loss 0.42 vs champion 0.4: worse by 0.02 > tolerance 0.01", 0.024,
                 id="better-primary-worse-guard"),
    pytest.param(AUC_GATE, auc(0.83, log_loss=0.405), auc(0.806, log_loss=0.40), AUC_BASELINE, True,
                 "within tolerance 0.01", 0.024,
                 id="better-primary-guard-within-tolerance"),
    pytest.param(RMSE_GATE, rmse(10.0, mae=5.6), rmse(10.5, mae=5.0), RMSE_BASELINE, False,
                 "guard mae 5.6 vs champion 5: worse by 0.6 > tolerance 0.5", 0.5,
                 id="lower-is-better-guard"),
    pytest.param(AUC_GATE, auc(0.83, basic=0.70, premium=0.90), auc(0.806, basic=0.75, premium=0.85),
                 AUC_BASELINE, False,
                 "slice plan=basic: roc_auc 0.7 vs champion 0.75, worse by 0.05 > slice tolerance 0.03", 0.024,
                 id="worse-on-a-slice"),
    pytest.param(AUC_GATE, auc(0.83, basic=0.73), auc(0.806, basic=0.75), AUC_BASELINE, True,
                 "within slice tolerance 0.03", 0.024,
                 id="slice-within-tolerance"),
    pytest.param(RMSE_GATE, rmse(10.0, airport=14.0), rmse(10.5, airport=12.5), RMSE_BASELINE, False,
                 "slice zone=airport: rmse 14 vs champion 12.5, worse by 1.5 > slice tolerance 1", 0.5,
                 id="lower-is-better-worse-on-a-slice"),
    pytest.param(AUC_GATE, auc(0.83, basic=NAN), auc(0.806, basic=0.75), AUC_BASELINE, True,
                 "slice plan=basic: the challenger has no roc_auc there", 0.024,
                 id="nan-slice-not-judged"),
    pytest.param(AUC_GATE, auc(NAN), auc(0.806), AUC_BASELINE, False,
                 "no usable value for roc_auc=nan", None,
                 id="nan-challenger-primary"),
    pytest.param(AUC_GATE, Evaluation(metrics={"roc_auc": 0.9}), auc(0.806), AUC_BASELINE, False,
                 "log_loss=missing", None,
                 id="missing-challenger-guard"),
    pytest.param(AUC_GATE, auc(0.80), auc(NAN), AUC_BASELINE, True,
                 "judged against the naive baseline instead", 0.30,
                 id="nan-champion-challenger-beats-baseline"),
    pytest.param(AUC_GATE, auc(0.5005), auc(NAN), AUC_BASELINE, False,
                 "< required +0.002", 0.0005,
                 id="nan-champion-challenger-not-beating-baseline"),
    pytest.param(AUC_GATE, auc(0.80), None, auc(NAN), False,
                 "the baseline has no roc_auc", None,
                 id="no-champion-nan-baseline"),
]
# fmt: on


@pytest.mark.parametrize(("gate", "challenger", "champion", "baseline", "promote", "phrase", "delta"), CASES)
def test_gate(
    gate: PromotionGate,
    challenger: Evaluation,
    champion: Evaluation | None,
    baseline: Evaluation,
    promote: bool,
    phrase: str,
    delta: float | None,
) -> None:
    decision = decide(gate, challenger, champion, baseline)
    assert isinstance(decision, GateDecision)
    assert decision.promote is promote, decision.reasons
    assert any(phrase in reason for reason in decision.reasons), decision.reasons
    if delta is None:
        assert decision.primary_delta is None
    else:
        assert decision.primary_delta == pytest.approx(delta, abs=1e-9)
    # Reasons are sentences a person reads in an alert mail.
    assert decision.reasons
    assert all(reason.endswith(".") for reason in decision.reasons), decision.reasons
    if not promote:
        assert decision.reasons[0].startswith("rejected"), decision.reasons


def test_gate_is_pure_and_deterministic() -> None:
    challenger, champion = auc(0.83, basic=0.73), auc(0.806, basic=0.75)
    first = decide(AUC_GATE, challenger, champion, AUC_BASELINE)
    assert decide(AUC_GATE, challenger, champion, AUC_BASELINE) == first
    assert challenger == auc(0.83, basic=0.73)  # inputs untouched


def test_slices_only_on_one_side_are_not_compared() -> None:
    challenger = auc(0.83, basic=0.10)  # terrible, but the champion has no such slice to compare with
    decision = decide(AUC_GATE, challenger, auc(0.806, premium=0.9), AUC_BASELINE)
    assert decision.promote
    assert not any("plan=basic" in reason for reason in decision.reasons)


def test_zero_margin_still_needs_a_strict_improvement() -> None:
    gate = PromotionGate(primary_metric="roc_auc", min_improvement=0.0)
    assert not decide(gate, auc(0.8), auc(0.8), AUC_BASELINE).promote
    assert decide(gate, auc(0.8001), auc(0.8), AUC_BASELINE).promote
