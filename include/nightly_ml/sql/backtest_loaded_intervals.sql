-- Intervals of a dataset in [start, end) whose load merged, and whether they were monitored.
SELECT a.interval_start, a.interval_end,
       EXISTS (SELECT 1 FROM ops.monitoring_runs m
               WHERE m.dataset = a.dataset AND m.interval_start = a.interval_start) AS monitored
FROM ops.load_audit a
WHERE a.dataset = %(dataset)s AND a.status = 'merged'
  AND a.interval_start >= %(start)s AND a.interval_start < %(end)s
ORDER BY a.interval_start;
