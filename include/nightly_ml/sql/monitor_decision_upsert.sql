-- One monitor run's decision for one interval (a retry of the same run replaces its own row).
INSERT INTO ops.monitor_decisions (
    dataset, interval_start, interval_end, run_id, action, should_retrain, reasons, champion_version, decided_at
) VALUES (
    %(dataset)s, %(interval_start)s, %(interval_end)s, %(run_id)s, %(action)s, %(should_retrain)s,
    CAST(%(reasons)s AS jsonb), %(champion_version)s, now()
)
ON CONFLICT (dataset, interval_start, run_id) DO UPDATE SET
    interval_end = EXCLUDED.interval_end,
    action = EXCLUDED.action,
    should_retrain = EXCLUDED.should_retrain,
    reasons = EXCLUDED.reasons,
    champion_version = EXCLUDED.champion_version,
    decided_at = EXCLUDED.decided_at
