-- Whether a table is a partition of the dataset's warehouse table.
SELECT EXISTS (
    SELECT 1 FROM pg_catalog.pg_inherits
    WHERE inhparent = to_regclass(%(parent)s) AND inhrelid = to_regclass(%(child)s)
)
