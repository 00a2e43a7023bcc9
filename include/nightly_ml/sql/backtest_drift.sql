-- The monitoring verdict of each interval in [range_start, range_end): the latest pass per interval (a re-run
-- replaces an earlier one), whether any feature or the predictions drifted, and whether it asked to retrain.
SELECT interval_start,
       cardinality(drifted_features) > 0 AS feature_drift,
       prediction_drift,
       should_retrain
FROM (
    SELECT DISTINCT ON (interval_start) interval_start, drifted_features, prediction_drift, should_retrain
    FROM ops.monitoring_runs
    WHERE dataset = %(dataset)s AND interval_start >= %(range_start)s AND interval_start < %(range_end)s
    ORDER BY interval_start, created_at DESC
) AS latest
ORDER BY interval_start
