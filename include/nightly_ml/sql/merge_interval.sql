-- Replace one interval's rows with the batch's good rows (typed staging rows minus quarantined ones).
-- Rows of the interval that are no longer in the batch are deleted; the rest are upserted on the key.
WITH good AS (
    SELECT v.* FROM {typed} AS v
    WHERE NOT EXISTS (SELECT 1 FROM {bad} AS b WHERE b._row_id = v._row_id)
),
deleted AS (
    DELETE FROM {warehouse} AS w
    WHERE w._interval_start = %(start)s
      AND NOT EXISTS (SELECT 1 FROM good WHERE good.{key_value} = w.{key})
    RETURNING 1
),
merged AS (
    INSERT INTO {warehouse} AS w ({columns}, _interval_start, _interval_end, _row_hash)
    SELECT {values}, %(start)s, %(end)s, md5(concat_ws('|', {hash_values}))
    FROM good AS v
    ON CONFLICT ({key}) DO UPDATE SET {updates}
    RETURNING 1
)
SELECT (SELECT count(*) FROM deleted), (SELECT count(*) FROM merged);
