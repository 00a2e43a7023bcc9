-- ops.try_timestamptz catches errors (a subtransaction), which PostgreSQL forbids in parallel
-- workers: a batch large enough for a parallel plan failed validation. It also depends on the
-- session's time zone, so it is STABLE, not IMMUTABLE.
ALTER FUNCTION ops.try_timestamptz(text) PARALLEL UNSAFE STABLE;
