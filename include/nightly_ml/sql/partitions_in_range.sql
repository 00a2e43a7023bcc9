-- The partitions of a table whose interval (the one value of their LIST bound) starts in [start, end).
SELECT partition_name, interval_start
FROM ops.interval_partitions(to_regclass(%(parent)s))
WHERE interval_start >= %(start)s AND interval_start < %(end)s
ORDER BY interval_start
