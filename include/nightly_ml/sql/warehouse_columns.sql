-- The columns of a table in their order: name, type (with modifiers), whether it is NOT NULL, and its
-- collation when not its type's default (quoted, as a COLLATE clause takes it; else NULL). The merge builds
-- an interval's partition with exactly these, since ATTACH PARTITION wants the parent's columns.
SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,
       CASE WHEN a.attcollation <> t.typcollation
            THEN pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.collname) END
FROM pg_catalog.pg_attribute AS a
JOIN pg_catalog.pg_type AS t ON t.oid = a.atttypid
LEFT JOIN pg_catalog.pg_collation AS c ON c.oid = a.attcollation
LEFT JOIN pg_catalog.pg_namespace AS n ON n.oid = c.collnamespace
WHERE a.attrelid = to_regclass(%(table)s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
