-- Build an interval's new partition on its own (nothing reads it yet) from the batch's good rows (typed
-- rows that broke no rule): the labels stored on the interval's rows are carried over (a late label
-- survives a re-run that brings none), each row gets its hash, and the indexes are built in bulk once
-- the rows are in (far cheaper than maintaining them row by row). nightly_ml.partitions swaps it in.
DROP TABLE IF EXISTS pg_temp._merge_labels;
CREATE TEMP TABLE _merge_labels ON COMMIT DROP AS
SELECT w.{key} AS _key, w.{label} AS _label, w._label_interval_start AS _label_start
FROM {warehouse} AS w
WHERE w._interval_start = %(start)s AND (w.{label} IS NOT NULL OR w._label_interval_start IS NOT NULL);
-- Without statistics the planner guesses a big table and sorts the whole batch for a merge join.
ANALYZE pg_temp._merge_labels;
DROP TABLE IF EXISTS {building};
CREATE TABLE {building} (LIKE {warehouse} INCLUDING DEFAULTS);
INSERT INTO {building} ({columns}, _interval_start, _interval_end, _label_interval_start, _row_hash)
SELECT {values}, %(start)s, %(end)s, CASE WHEN v.{label_value} IS NULL THEN k._label_start END,
       lpad(to_hex(hash_record_extended(ROW({hash_values}), 0)), 16, '0')
FROM {typed} AS v
LEFT JOIN _merge_labels AS k ON k._key = v.{key_value}
WHERE v._broken IS NULL;
ALTER TABLE {building} ADD PRIMARY KEY ({key}, _interval_start);
CREATE INDEX ON {building} ({event_time});
ANALYZE {building};
-- Rows merged; the interval's stored rows whose key the batch no longer has; keys of the batch stored
-- under another interval since validation quarantined those (a concurrent run of another interval).
SELECT (SELECT count(*) FROM {building}),
       (SELECT count(*) FROM {warehouse} AS w
        WHERE w._interval_start = %(start)s
          AND NOT EXISTS (SELECT 1 FROM {building} AS b WHERE b.{key} = w.{key})),
       ARRAY(SELECT b.{key}::text FROM {building} AS b
             WHERE EXISTS (SELECT 1 FROM {warehouse} AS w WHERE w.{key} = b.{key} AND w._interval_start <> %(start)s)
             ORDER BY 1 LIMIT 5);
