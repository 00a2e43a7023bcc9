-- The merged run's quarantine is the interval's: rows another run of the interval wrote meanwhile go.
DELETE FROM ops.quarantine WHERE dataset = %(dataset)s AND interval_start = %(start)s AND run_id <> %(run_id)s;
