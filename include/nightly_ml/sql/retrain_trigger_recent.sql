-- The newest retraining triggered for a dataset in the cool-down window before an interval.
SELECT max(interval_start) FROM ops.retrain_triggers
WHERE dataset = %(dataset)s AND interval_start >= %(since)s AND interval_start < %(start)s;
