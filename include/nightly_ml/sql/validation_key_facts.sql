-- Before the typed copy of a staging table (validation_typed_table.sql): the few keys with a fact that needs
-- more than their row (repeated in the batch, or already stored under another interval), by their staged
-- text. The typed copy joins them to its rows, when there are any (most batches have none).

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
-- read), in the partitions whose key range meets the batch's (nightly_ml.etl.key_ranges picks them). Every
-- partition read is read whole, so this costs more as the history grows when keys have no order
-- (docs/PERFORMANCE.md).
INSERT INTO {keys}
SELECT DISTINCT k._key, false FROM (SELECT {key} AS _key, {typed_key} AS _typed_key FROM {staging}) AS k
JOIN {stored} AS w ON w.{key} = k._typed_key AND w._interval_start <> %(start)s{key_lookback};
SELECT EXISTS (SELECT 1 FROM {keys});
