-- A table from before the partitioning makes way for the partitioned table: it takes the DEFAULT
-- partition's name and gives up its primary key (on the key alone), whose name the partitioned table's
-- uses; attaching it builds the partition's own, the primary key on (key, interval). Its other indexes
-- are dropped by name after this.
ALTER TABLE {legacy} RENAME TO {default_name};
ALTER TABLE {default_partition} DROP CONSTRAINT IF EXISTS {primary_key};
