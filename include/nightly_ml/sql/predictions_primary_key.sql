-- The primary key of a dataset's predictions table, if it still has one (tables of before: dataset_tables.sql).
SELECT conname FROM pg_constraint WHERE conrelid = CAST(%(table)s AS regclass) AND contype = 'p'
