-- The newest intervals in [since, until) a table partitioned by interval holds rows of ({row_filter} on the
-- row r: the model version, for predictions), newest first, at most a limit; since may be NULL (no lower
-- bound). Monitoring pools the newest loaded intervals and compares the newest scored ones.
-- An interval's rows are a partition of their own (nightly_ml.partitions): the candidates are the
-- partitions' bounds and the intervals with rows in the DEFAULT partition (a loose index scan of its own
-- index: one probe per interval), newest first; a probe of one row each (pruned to the interval's
-- partition) keeps those that hold rows, until the limit is reached.
WITH RECURSIVE in_default (interval_start, depth) AS (
    (SELECT r._interval_start, 1
     FROM {default_partition} AS r
     WHERE r._interval_start < %(until)s
       AND (CAST(%(since)s AS timestamptz) IS NULL OR r._interval_start >= %(since)s){row_filter}
     ORDER BY r._interval_start DESC
     LIMIT 1)
    UNION ALL
    SELECT (SELECT r._interval_start
            FROM {default_partition} AS r
            WHERE r._interval_start < in_default.interval_start
              AND (CAST(%(since)s AS timestamptz) IS NULL OR r._interval_start >= %(since)s){row_filter}
            ORDER BY r._interval_start DESC
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
    WHERE interval_start < %(until)s
      AND (CAST(%(since)s AS timestamptz) IS NULL OR interval_start >= %(since)s)
)
SELECT interval_start
FROM (SELECT c.interval_start
      -- OFFSET 0 keeps the order for the probes, which stop at the limit; LIMIT 1 keeps each a probe (an
      -- EXISTS would become a semi-join that reads every row of the table)
      FROM (SELECT interval_start FROM candidates ORDER BY interval_start DESC OFFSET 0) AS c
      CROSS JOIN LATERAL (SELECT FROM {table} AS r
                          WHERE r._interval_start = c.interval_start{row_filter}
                          LIMIT 1) AS has_rows
      LIMIT %(limit)s) AS newest
ORDER BY interval_start DESC
