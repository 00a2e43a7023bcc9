-- Serialise every move of one model's champion alias; released when the transaction ends.
SELECT pg_advisory_xact_lock(hashtextextended(%(lock_key)s, 0))
