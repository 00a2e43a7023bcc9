-- Replace one interval's rows with the batch's good rows (typed rows that broke no rule), set-based:
-- count the interval's rows gone from the batch, keep the labels stored on the interval's rows (a
-- late label survives a re-run that brings none), delete the interval, insert the batch. The caller
-- runs it in one transaction, so readers see the old interval or the new one. A key stored under
-- another interval was quarantined by validation; one stored there since fails the insert (nothing
-- is merged) rather than moving a row between intervals.
DROP TABLE IF EXISTS pg_temp._merge_labels;
CREATE TEMP TABLE _merge_labels ON COMMIT DROP AS
SELECT w.{key} AS _key, w.{label} AS _label, w._label_interval_start AS _label_start
FROM {warehouse} AS w
WHERE w._interval_start = %(start)s AND (w.{label} IS NOT NULL OR w._label_interval_start IS NOT NULL);
DROP TABLE IF EXISTS pg_temp._merge_counts;
CREATE TEMP TABLE _merge_counts ON COMMIT DROP AS
SELECT count(*) AS deleted
FROM {warehouse} AS w
WHERE w._interval_start = %(start)s
  AND NOT EXISTS (SELECT 1 FROM {typed} AS v WHERE v._broken IS NULL AND v.{key_value} = w.{key});
DELETE FROM {warehouse} WHERE _interval_start = %(start)s;
WITH merged AS (
    INSERT INTO {warehouse} ({columns}, _interval_start, _interval_end, _label_interval_start, _row_hash)
    SELECT {values}, %(start)s, %(end)s, CASE WHEN v.{label_value} IS NULL THEN k._label_start END,
           md5(concat_ws('|', {hash_values}))
    FROM {typed} AS v
    LEFT JOIN _merge_labels AS k ON k._key = v.{key_value}
    WHERE v._broken IS NULL
    RETURNING 1
)
SELECT (SELECT deleted FROM _merge_counts), (SELECT count(*) FROM merged);
