-- Columns one of the two tables has and the other lacks (name, type, whether the partitioned table
-- lacks it): a table from before the partitioning may miss a later feature or keep a retired one.
WITH columns AS (
    SELECT a.attrelid, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type
    FROM pg_catalog.pg_attribute AS a
    WHERE a.attnum > 0 AND NOT a.attisdropped
      AND a.attrelid IN (to_regclass(%(parent)s), to_regclass(%(legacy)s))
)
SELECT c.attname, c.type, c.attrelid = to_regclass(%(legacy)s) AS missing_from_parent
FROM columns AS c
WHERE NOT EXISTS (SELECT 1 FROM columns AS o WHERE o.attname = c.attname AND o.attrelid <> c.attrelid)
ORDER BY c.attrelid = to_regclass(%(legacy)s), c.attname
