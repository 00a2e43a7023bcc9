-- Forget an earlier pass over the same interval, so a re-run replaces it.
DELETE FROM ops.drift_metrics WHERE dataset = %(dataset)s AND interval_start = %(interval_start)s;
DELETE FROM ops.monitoring_runs WHERE dataset = %(dataset)s AND interval_start = %(interval_start)s;
