-- A model's promotion history, newest first.
SELECT id, dataset, model_name, from_version, to_version, action, actor, reason, metrics, gate_reasons, decided_at,
       primary_metric, margin, confidence, required_confidence, baseline_confidence, bootstrap,
       holdout_start, holdout_end, interval_start, interval_end
FROM ops.promotion_history
WHERE model_name = %(model_name)s
ORDER BY id DESC
LIMIT %(limit)s
