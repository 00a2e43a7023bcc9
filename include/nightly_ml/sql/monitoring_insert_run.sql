INSERT INTO ops.monitoring_runs (
    dataset, interval_start, interval_end, run_id, champion_version, reference_start, reference_end,
    rows, reference_rows, drifted_features, prediction_psi, prediction_drift, prediction_interval_start,
    live_metrics, labelled_rows, performance_decay, soft_failures, should_retrain, reasons, report_path,
    false_alarm_rate, pool_start, run_report_path, is_current
) VALUES (
    %(dataset)s, %(interval_start)s, %(interval_end)s, %(run_id)s, %(champion_version)s, %(reference_start)s,
    %(reference_end)s, %(rows)s, %(reference_rows)s, CAST(%(drifted_features)s AS text[]), %(prediction_psi)s,
    %(prediction_drift)s, %(prediction_interval_start)s, CAST(%(live_metrics)s AS jsonb), %(labelled_rows)s,
    %(performance_decay)s, CAST(%(soft_failures)s AS jsonb), %(should_retrain)s, CAST(%(reasons)s AS jsonb),
    %(report_path)s, %(false_alarm_rate)s, %(pool_start)s, %(run_report_path)s, true
)
