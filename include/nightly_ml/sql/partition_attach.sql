-- The interval's new partition, built and indexed on its own, joins its table. Its indexes match the
-- table's, so attaching adopts them; it checks that DEFAULT holds none of the interval's rows, and the
-- partition's own rows (one scan) unless a CHECK of the bound proves them (the merge's {bound_check}, no
-- longer needed once the partition's own bound holds).
ALTER TABLE {building} RENAME TO {final_name};
ALTER TABLE {parent} ATTACH PARTITION {final} FOR VALUES IN ({bound});
ALTER TABLE {final} DROP CONSTRAINT IF EXISTS {bound_check};
