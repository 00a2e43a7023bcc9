-- The warehouse partitions the batch's validation did not look its keys up in (the seen table lists those):
-- attached or replaced since, by a run of another interval that merged meanwhile. The default partition
-- too: rows can reach it without a partition of their own. Usually none, so the merge's check of keys
-- stored elsewhere costs nothing instead of probing every stored interval per batch row.
SELECT n.nspname, c.relname
FROM pg_catalog.pg_inherits AS i
JOIN pg_catalog.pg_class AS c ON c.oid = i.inhrelid
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
WHERE i.inhparent = to_regclass(%(table)s)
  AND (i.inhrelid NOT IN (SELECT s.partition FROM {seen} AS s)
       OR pg_catalog.pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT')
ORDER BY 1, 2
