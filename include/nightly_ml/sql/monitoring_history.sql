-- The newest monitoring passes before a moment (at most a limit of them), oldest first: the current pass of
-- each interval (earlier passes are kept, not plotted), each with the PSI of every feature (and of the
-- predictions, as '_prediction') and the calibrated threshold it was judged by.
SELECT r.interval_start,
       r.should_retrain,
       r.drifted_features,
       r.prediction_psi,
       r.live_metrics,
       r.labelled_rows,
       coalesce(jsonb_object_agg(m.feature, m.psi) FILTER (WHERE m.feature IS NOT NULL), '{}'::jsonb) AS feature_psi,
       coalesce(jsonb_object_agg(m.feature, m.psi_threshold) FILTER (WHERE m.feature IS NOT NULL), '{}'::jsonb)
           AS feature_threshold
FROM (
    SELECT * FROM ops.monitoring_runs
    WHERE dataset = %(dataset)s AND interval_start < %(until)s AND is_current
    ORDER BY interval_start DESC
    LIMIT %(limit)s
) AS r
LEFT JOIN ops.drift_metrics AS m
    ON m.dataset = r.dataset AND m.interval_start = r.interval_start AND m.run_id = r.run_id
GROUP BY r.interval_start, r.should_retrain, r.drifted_features, r.prediction_psi, r.live_metrics, r.labelled_rows
ORDER BY r.interval_start
