-- The monitoring verdict of each interval in [range_start, range_end): its current pass (earlier passes are
-- kept in the history), whether any feature or the predictions drifted, and whether it asked to retrain.
SELECT interval_start,
       cardinality(drifted_features) > 0 AS feature_drift,
       prediction_drift,
       should_retrain
FROM ops.monitoring_runs
WHERE dataset = %(dataset)s AND interval_start >= %(range_start)s AND interval_start < %(range_end)s
  AND is_current
ORDER BY interval_start
