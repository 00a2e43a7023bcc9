-- One promotion decision or alias move (the gate's numbers are NULL for a rollback).
INSERT INTO ops.promotion_history
    (dataset, model_name, from_version, to_version, action, actor, reason, metrics, gate_reasons,
     primary_metric, margin, confidence, required_confidence, baseline_confidence, bootstrap,
     holdout_start, holdout_end, interval_start, interval_end)
VALUES
    (%(dataset)s, %(model_name)s, %(from_version)s, %(to_version)s, %(action)s, %(actor)s, %(reason)s,
     %(metrics)s::jsonb, %(gate_reasons)s::jsonb,
     %(primary_metric)s, %(margin)s, %(confidence)s, %(required_confidence)s, %(baseline_confidence)s,
     %(bootstrap)s::jsonb, %(holdout_start)s, %(holdout_end)s, %(interval_start)s, %(interval_end)s)
RETURNING id
