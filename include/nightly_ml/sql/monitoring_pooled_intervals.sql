-- The newest loaded intervals at or before the current one and not before the reference
-- window's end, newest first (at most a limit): the intervals drift.window_intervals pools.
-- An interval's rows are a partition of their own (nightly_ml.partitions): the candidates are the
-- partitions' bounds and the intervals with rows in the DEFAULT partition (a loose index scan of its
-- own index: one probe per interval), newest first; a probe of one row each (pruned to the interval's
-- partition) keeps those that hold rows, until the limit is reached.
WITH RECURSIVE in_default (interval_start, depth) AS (
    (SELECT _interval_start, 1
     FROM {default_partition}
     WHERE _interval_start <= %(cur_start)s AND _interval_start >= %(ref_end)s
     ORDER BY _interval_start DESC
     LIMIT 1)
    UNION ALL
    SELECT (SELECT d._interval_start
            FROM {default_partition} AS d
            WHERE d._interval_start < in_default.interval_start AND d._interval_start >= %(ref_end)s
            ORDER BY d._interval_start DESC
            LIMIT 1),
           depth + 1
    FROM in_default
    WHERE in_default.interval_start IS NOT NULL AND depth < %(limit)s
),
candidates AS (
    SELECT interval_start FROM in_default WHERE interval_start IS NOT NULL
    UNION ALL
    SELECT interval_start
    FROM ops.interval_partitions(to_regclass(%(table_name)s))
    WHERE interval_start <= %(cur_start)s AND interval_start >= %(ref_end)s
)
SELECT interval_start
FROM (SELECT c.interval_start
      -- OFFSET 0 keeps the order for the probes, which stop at the limit; LIMIT 1 keeps each a probe (an
      -- EXISTS would become a semi-join that reads every row of the table)
      FROM (SELECT interval_start FROM candidates ORDER BY interval_start DESC OFFSET 0) AS c
      CROSS JOIN LATERAL (SELECT FROM {table} AS t WHERE t._interval_start = c.interval_start LIMIT 1) AS has_rows
      LIMIT %(limit)s) AS loaded
ORDER BY interval_start DESC
