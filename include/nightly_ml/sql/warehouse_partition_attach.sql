-- The interval's new partition, built and indexed on its own, becomes part of the warehouse. Its
-- indexes match the warehouse's, so attaching adopts them; it checks the partition's rows (one scan)
-- and that DEFAULT holds none of the interval's.
ALTER TABLE {building} RENAME TO {final_name};
ALTER TABLE {warehouse} ATTACH PARTITION {final} FOR VALUES IN (%(start)s);
