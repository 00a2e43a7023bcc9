-- Serialise the merges of one interval (two runs of it at once: a backfill and a manual run, a zombie task and
-- its retry); released when the transaction ends.
SELECT pg_advisory_xact_lock(hashtextextended(%(lock_key)s, 0))
