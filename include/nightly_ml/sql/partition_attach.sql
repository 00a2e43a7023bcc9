-- The interval's new partition, built and indexed on its own, joins its table. Its indexes match the
-- table's, so attaching adopts them; it checks the partition's rows (one scan) and that DEFAULT holds
-- none of the interval's.
ALTER TABLE {building} RENAME TO {final_name};
ALTER TABLE {parent} ATTACH PARTITION {final} FOR VALUES IN ({bound});
