-- A re-run of an interval replaces that interval's quarantine rows.
DELETE FROM ops.quarantine WHERE dataset = %(dataset)s AND interval_start = %(start)s;
