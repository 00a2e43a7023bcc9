-- The typed copy of a staging table and its bad rows. Each column is cast once into "<column>__value"
-- and every row rule is evaluated on the same row; _broken lists the positions of the rules a row breaks
-- (the flags: one CASE per rule), NULL for a good row. Nothing but the typed values and _broken is kept:
-- the merge reads the values, the quarantine the raw row from staging.
--
-- First, the few keys with a fact that needs more than their row (repeated in the batch, or already
-- stored under another interval), by their staged text. Then one parallel scan of the staging table
-- joined to them. Each level of the scan carries a volatile output (_once): the planner neither inlines
-- such a subquery into every use of its columns (each value is computed once) nor, unlike OFFSET 0,
-- keeps it out of the parallel workers.

-- The warehouse's partitions as they were when the batch's keys were matched to them (nightly_ml.etl.key_ranges):
-- the merge re-checks only the partitions this list lacks (attached or replaced since), not every stored
-- interval again.
DROP TABLE IF EXISTS {seen};
CREATE UNLOGGED TABLE {seen} AS SELECT unnest(%(seen)s::oid[]) AS partition;
DROP TABLE IF EXISTS {keys};
-- Repeated in the batch: first the 64-bit hashes seen twice (grouping a million integers costs half of
-- grouping a million texts), then the keys behind those few hashes. A batch whose hashes are all distinct
-- has none, and counting them (one sort, 0.25 s a million) is a quarter of grouping them: the grouping runs
-- only when the count says it may find some.
CREATE UNLOGGED TABLE {keys} AS
SELECT {key} AS _key, true AS _duplicate FROM {staging}
WHERE (SELECT count({key}) > count(DISTINCT hashtextextended({key}::text, 0)) FROM {staging})
  AND hashtextextended({key}::text, 0) IN (
    SELECT hashtextextended({key}::text, 0) FROM {staging} WHERE {key} IS NOT NULL GROUP BY 1 HAVING count(*) > 1
  )
GROUP BY {key} HAVING count(*) > 1;
-- Stored under another interval (since the spec's key_lookback_days, if set: its intervals alone are
-- read), in the partitions whose key range meets the batch's ({stored}, nightly_ml.etl.key_ranges). Every
-- partition read is read whole, so this costs more as the history grows when keys have no order
-- (docs/PERFORMANCE.md).
INSERT INTO {keys}
SELECT DISTINCT k._key, false FROM (SELECT {key} AS _key, {typed_key} AS _typed_key FROM {staging}) AS k
JOIN {stored} AS w ON w.{key} = k._typed_key AND w._interval_start <> %(start)s{key_lookback};
DROP TABLE IF EXISTS {typed};
CREATE UNLOGGED TABLE {typed} AS
SELECT _row_id, {values},
       CASE WHEN {any_broken} THEN array_remove(ARRAY[{flags}]::smallint[], NULL) END AS _broken
FROM (
    SELECT
        t.*,
        CASE WHEN t.{event_time} IS NULL OR t._event_kind = 0 THEN NULL
             ELSE COALESCE(t.{event_time_value} >= %(start)s AND t.{event_time_value} < %(end)s, false)
        END AS _in_interval,
        COALESCE(k._other, false) AS _key_in_other_interval,
        COALESCE(k._duplicate, false) AS _duplicate_key,
        clock_timestamp() AS _once_f
    FROM ({typed_select}) AS t
    LEFT JOIN (
        SELECT _key, bool_or(_duplicate) AS _duplicate, bool_or(NOT _duplicate) AS _other FROM {keys} GROUP BY _key
    ) AS k ON k._key = t.{key}
) AS f;
DROP TABLE {keys};
-- Statistics of what later statements filter and join on (the merge, the quarantine): half the cost of all.
-- From 3,000 sampled rows (statistics target 10, not 30,000): the plans need the share of good rows and the
-- keys' distinct count, which such a sample gives as well (1M rows: ANALYZE 0.1 s -> 0.02 s).
-- (The lower target holds until this transaction ends.)
SET LOCAL default_statistics_target = 10;
ANALYZE {typed} (_row_id, _broken, {key_value}, {event_time_value});
DROP TABLE IF EXISTS {bad};
CREATE UNLOGGED TABLE {bad} AS SELECT _row_id, _broken FROM {typed} WHERE _broken IS NOT NULL;
ALTER TABLE {bad} ADD PRIMARY KEY (_row_id);
