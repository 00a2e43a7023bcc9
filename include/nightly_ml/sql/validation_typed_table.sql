-- The typed copy of a staging table and its bad rows. Each column is cast once into "<column>__value"
-- and every row rule is evaluated on the same row; _broken lists the positions of the rules a row breaks
-- (the flags: one CASE per rule), NULL for a good row. Nothing but the typed values and _broken is kept:
-- the merge reads the values, the quarantine the raw row from staging.
--
-- One parallel scan of the staging table, joined to the keys validation_key_facts.sql found (or, when it
-- found none, both facts false without a join: 1M rows, ~0.1 s less). Each level of the typed select
-- carries a volatile output (_once): the planner neither inlines such a subquery into every use of its
-- columns (each value is computed once) nor, unlike OFFSET 0, keeps it out of the parallel workers. The
-- level of the facts has none: its few cheap expressions are inlined into the rules instead, one
-- projection of every row fewer (1M rows: ~0.2 s less CPU).
DROP TABLE IF EXISTS {typed};
-- Read by the merge within minutes and dropped: not for autovacuum (its statistics are made below).
CREATE UNLOGGED TABLE {typed} WITH (autovacuum_enabled = false) AS
SELECT _row_id, {values},
       CASE WHEN {any_broken} THEN array_remove(ARRAY[{flags}]::smallint[], NULL) END AS _broken
FROM (
    SELECT
        t.*,
        CASE WHEN t.{event_time} IS NULL OR t._event_kind = 0 THEN NULL
             ELSE COALESCE(t.{event_time_value} >= %(start)s AND t.{event_time_value} < %(end)s, false)
        END AS _in_interval,
        {key_facts}
    FROM ({typed_select}) AS t{key_join}
) AS f;
DROP TABLE {keys};
-- Statistics of what later statements filter and join on (the merge, the quarantine): half the cost of all.
-- From 3,000 sampled rows (statistics target 10, not 30,000): the plans need the share of good rows and the
-- keys' distinct count, which such a sample gives as well (1M rows: ANALYZE 0.1 s -> 0.02 s).
-- (The lower target holds until this transaction ends.)
SET LOCAL default_statistics_target = 10;
ANALYZE {typed} (_row_id, _broken, {key_value}, {event_time_value});
DROP TABLE IF EXISTS {bad};
CREATE UNLOGGED TABLE {bad} WITH (autovacuum_enabled = false) AS SELECT _row_id, _broken FROM {typed} WHERE _broken IS NOT NULL;
ALTER TABLE {bad} ADD PRIMARY KEY (_row_id);
