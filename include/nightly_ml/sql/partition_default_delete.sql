-- The rows of the intervals starting in [start, end) that sit in a table's DEFAULT partition (written
-- there before the table was partitioned, or by anything but a partition swap).
DELETE FROM {default_partition} WHERE _interval_start >= %(start)s AND _interval_start < %(end)s
