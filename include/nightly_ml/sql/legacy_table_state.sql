-- The kind of a dataset's warehouse or predictions table ('r': a plain table from before the
-- partitioning, 'p': partitioned) and its primary key's name; no row when the table does not exist yet.
SELECT c.relkind, k.conname
FROM pg_catalog.pg_class AS c
LEFT JOIN pg_catalog.pg_constraint AS k ON k.conrelid = c.oid AND k.contype = 'p'
WHERE c.oid = to_regclass(%(table)s)
