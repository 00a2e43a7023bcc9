-- The newest scored intervals strictly before a moment, newest first, by one model version (every
-- version when NULL). An interval's predictions are a partition of their own (nightly_ml.partitions): the
-- candidates are the partitions' bounds and the intervals with predictions in the DEFAULT partition (a
-- loose index scan of its own index: one probe per interval), newest first; a probe each (pruned to the
-- interval's partition, stopping at its first row by the version) keeps those scored, until the limit.
WITH RECURSIVE in_default (interval_start, depth) AS (
    (SELECT _interval_start, 1
     FROM {default_partition}
     WHERE _interval_start < %(before)s
       AND (CAST(%(model_version)s AS text) IS NULL OR model_version = %(model_version)s)
     ORDER BY _interval_start DESC
     LIMIT 1)
    UNION ALL
    SELECT (SELECT d._interval_start
            FROM {default_partition} AS d
            WHERE d._interval_start < in_default.interval_start
              AND (CAST(%(model_version)s AS text) IS NULL OR d.model_version = %(model_version)s)
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
    WHERE interval_start < %(before)s
)
SELECT interval_start
FROM (SELECT c.interval_start
      -- OFFSET 0 keeps the order for the probes, which stop at the limit; LIMIT 1 keeps each a probe (an
      -- EXISTS would become a semi-join that reads every row of the table)
      FROM (SELECT interval_start FROM candidates ORDER BY interval_start DESC OFFSET 0) AS c
      CROSS JOIN LATERAL (SELECT FROM {predictions} AS p
                          WHERE p._interval_start = c.interval_start
                            AND (CAST(%(model_version)s AS text) IS NULL OR p.model_version = %(model_version)s)
                          LIMIT 1) AS scored_by
      LIMIT %(limit)s) AS scored
ORDER BY interval_start DESC
