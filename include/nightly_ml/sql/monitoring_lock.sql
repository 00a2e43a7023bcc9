-- Serialise concurrent writers of the same dataset and interval (held until commit).
SELECT pg_advisory_xact_lock(%(lock_class)s, hashtext(%(dataset)s || '/' || CAST(%(interval_start)s AS text)))
