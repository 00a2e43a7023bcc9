-- The current load of an interval (its audit row's time), which a scoring record names.
SELECT finished_at FROM ops.load_audit WHERE dataset = %(dataset)s AND interval_start = %(start)s
