-- Whether an interval already holds a complete scoring by a model version of the interval's current load:
-- the scoring record names the version and the load it scored (ops.load_audit), and every row the record
-- counted is still there with that version.
SELECT r.rows
FROM ops.scoring_runs AS r
LEFT JOIN ops.load_audit AS a ON a.dataset = r.dataset AND a.interval_start = r.interval_start
WHERE r.dataset = %(dataset)s
  AND r.interval_start = %(start)s
  AND r.interval_end = %(end)s
  AND r.model_version = %(model_version)s
  AND r.load_finished_at IS NOT DISTINCT FROM a.finished_at
  AND r.rows = (
      SELECT count(*) FROM {predictions} AS p
      WHERE p._interval_start >= %(start)s AND p._interval_start < %(end)s AND p.model_version = %(model_version)s
  )
