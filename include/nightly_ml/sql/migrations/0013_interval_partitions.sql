-- The partitions of a table partitioned by interval (nightly_ml.partitions), each with the one value of its
-- LIST bound: the start of the interval whose rows it holds (NULL for the DEFAULT partition). The bound is
-- read back from its text in the session's time zone and date style, in which it is also printed. The
-- listings of loaded and scored intervals start from these bounds instead of an index on _interval_start
-- (monitoring_newest_intervals.sql).
CREATE OR REPLACE FUNCTION ops.interval_partitions(parent regclass)
RETURNS TABLE (partition_name name, interval_start timestamptz)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT c.relname,
           (regexp_match(pg_catalog.pg_get_expr(c.relpartbound, c.oid),
                         '^FOR VALUES IN \(''([^'']*)''\)$'))[1]::timestamptz
    FROM pg_catalog.pg_inherits AS i
    JOIN pg_catalog.pg_class AS c ON c.oid = i.inhrelid
    WHERE i.inhparent = parent
$$;
