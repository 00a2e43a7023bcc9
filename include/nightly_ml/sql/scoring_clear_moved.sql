-- Remove the predictions of any key the intervals starting in [start, end) now hold, scored under an
-- earlier interval (a row re-delivered by a later interval moves there): a hash join, not a subplan.
-- The intervals' own predictions go with their partitions (nightly_ml.partitions).
DELETE FROM {predictions} AS p
USING {warehouse} AS w
WHERE w.{key} = p.{key}
  AND w._interval_start >= %(start)s AND w._interval_start < %(end)s
  AND NOT (p._interval_start >= %(start)s AND p._interval_start < %(end)s)
