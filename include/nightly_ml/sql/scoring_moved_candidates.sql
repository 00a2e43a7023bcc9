-- The predictions partitions that may hold a key the intervals starting in [start, end) now hold, scored
-- under another interval (scoring_clear_moved.sql deletes those predictions). Validation keeps a key in one
-- interval of the warehouse (the key_in_other_interval rule), so a partition scored from its interval's
-- current load holds none: only the others are read, not every stored prediction each night. Those are
--   * the DEFAULT partition (rows from before the table was partitioned: any interval), if it holds any;
--   * a partition whose interval has no scoring record of its own, or whose record names another load than
--     the interval's current one (ops.load_audit: re-loaded since, or loaded by other means), as a partition
--     a catch-up range filled beside its first interval;
--   * with the spec's key_lookback_days, the intervals before the lookback, whose keys validation does not
--     look up (%(lookback_start)s, NULL without one).
SELECT c.oid::regclass::text, p.interval_start IS NULL AS is_default
FROM ops.interval_partitions(to_regclass(%(predictions)s)) AS p
JOIN pg_catalog.pg_inherits AS i ON i.inhparent = to_regclass(%(predictions)s)
JOIN pg_catalog.pg_class AS c ON c.oid = i.inhrelid AND c.relname = p.partition_name
LEFT JOIN ops.scoring_runs AS r ON r.dataset = %(dataset)s AND r.interval_start = p.interval_start
LEFT JOIN ops.load_audit AS a ON a.dataset = %(dataset)s AND a.interval_start = p.interval_start
WHERE p.interval_start IS NULL
   OR NOT (p.interval_start >= %(start)s AND p.interval_start < %(end)s)
      AND (r.load_finished_at IS NULL
           OR a.finished_at IS NULL
           OR r.load_finished_at <> a.finished_at
           OR p.interval_start < %(lookback_start)s::timestamptz)
ORDER BY p.interval_start NULLS FIRST
