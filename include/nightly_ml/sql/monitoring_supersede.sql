-- Before a run's pass over an interval is stored: drop that same run's earlier rows (a retry replaces its own
-- result; its drift metrics go with them) and mark every other pass over the interval as no longer current.
-- Earlier runs' rows are kept: the history of what was decided is never overwritten.
DELETE FROM ops.monitoring_runs
WHERE dataset = %(dataset)s AND interval_start = %(interval_start)s AND run_id = %(run_id)s;
UPDATE ops.monitoring_runs SET is_current = false
WHERE dataset = %(dataset)s AND interval_start = %(interval_start)s AND is_current;
