-- A (re)try of this run replaces its own quarantine rows, and a run that finds another run of the interval
-- loading it (ConcurrentRun) removes its own; rows of other runs are left to the merge, which keeps only the
-- merged run's (quarantine_keep_run.sql): a concurrent run's stage never erases the quarantine of the run
-- that merges.
DELETE FROM ops.quarantine WHERE dataset = %(dataset)s AND interval_start = %(start)s AND run_id = %(run_id)s;
