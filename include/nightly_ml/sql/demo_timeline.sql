-- One line per night: the load, and what monitoring decided (the interval's current pass).
SELECT a.interval_start, a.status, a.rows_merged, a.rows_quarantined, m.drifted_features,
       coalesce(m.should_retrain, false), m.reasons
FROM ops.load_audit AS a
LEFT JOIN ops.monitoring_runs AS m
    ON m.dataset = a.dataset AND m.interval_start = a.interval_start AND m.is_current
WHERE a.dataset = %(dataset)s
ORDER BY a.interval_start;
