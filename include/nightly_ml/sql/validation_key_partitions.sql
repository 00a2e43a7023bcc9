-- The warehouse's partitions when a batch is validated (oid, schema, name, the interval each holds: NULL for
-- the DEFAULT partition). nightly_ml.etl.key_ranges picks those whose keys the batch's may meet.
SELECT c.oid, n.nspname, c.relname, p.interval_start
FROM ops.interval_partitions(to_regclass(%(warehouse)s)) AS p
JOIN pg_catalog.pg_inherits AS i ON i.inhparent = to_regclass(%(warehouse)s)
JOIN pg_catalog.pg_class AS c ON c.oid = i.inhrelid AND c.relname = p.partition_name
JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
ORDER BY p.interval_start NULLS FIRST
