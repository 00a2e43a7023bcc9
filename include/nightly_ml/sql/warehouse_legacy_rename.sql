-- A warehouse table from before the partitioning makes way for the partitioned table: it takes the
-- DEFAULT partition's name and gives up its primary key (on the key alone) and indexes, whose names the
-- partitioned table's use; attaching it builds the partition's own, the primary key on (key, interval).
ALTER TABLE {warehouse} RENAME TO {default_name};
ALTER TABLE {default_partition} DROP CONSTRAINT IF EXISTS {primary_key};
DROP INDEX IF EXISTS {event_time_index};
DROP INDEX IF EXISTS {interval_index};
