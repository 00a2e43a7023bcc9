-- The columns of a table in their order: name, type (with modifiers) and whether it is NOT NULL. The merge
-- builds an interval's partition with exactly these, since ATTACH PARTITION wants the parent's columns.
SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull
FROM pg_catalog.pg_attribute AS a
WHERE a.attrelid = to_regclass(%(table)s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
