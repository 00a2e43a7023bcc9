-- The outcome of the latest load of an interval ('merged' or 'rejected'), if any.
SELECT status FROM ops.load_audit WHERE dataset = %(dataset)s AND interval_start = %(start)s;
