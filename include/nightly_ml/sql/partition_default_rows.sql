-- Whether a table's DEFAULT partition holds rows of the intervals starting in [start, end) (its index on
-- the interval start answers).
SELECT EXISTS (SELECT 1 FROM {default_partition} WHERE _interval_start >= %(start)s AND _interval_start < %(end)s)
