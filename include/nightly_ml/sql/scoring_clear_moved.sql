-- Remove the predictions of one partition (scoring_moved_candidates.sql) whose key the intervals starting in
-- [start, end) now hold, scored under an earlier interval (a row re-delivered by a later interval moves
-- there). The planner picks a hash join for a big partition, index probes into the intervals' primary keys
-- for a small one. The intervals' own predictions go with their partitions (nightly_ml.partitions).
DELETE FROM {partition} AS p
USING {warehouse} AS w
WHERE w.{key} = p.{key}
  AND w._interval_start >= %(start)s AND w._interval_start < %(end)s
  AND NOT (p._interval_start >= %(start)s AND p._interval_start < %(end)s)
