-- The partitions of a table whose interval (the one value of their LIST bound) starts in [start, end).
-- The bound is read back from its text in this session's time zone, in which it was also written.
SELECT c.relname, b.bound
FROM pg_catalog.pg_inherits AS i
JOIN pg_catalog.pg_class AS c ON c.oid = i.inhrelid
CROSS JOIN LATERAL (
    SELECT (regexp_match(pg_catalog.pg_get_expr(c.relpartbound, c.oid), '^FOR VALUES IN \(''([^'']*)''\)$'))[1]::timestamptz
        AS bound
) AS b
WHERE i.inhparent = to_regclass(%(parent)s) AND b.bound >= %(start)s AND b.bound < %(end)s
ORDER BY b.bound
