-- The first interval of the unbroken run of drifted intervals under one champion that ends at this one: where
-- the shift that drift retraining answers began. Read from each interval's current verdict up to this one
-- (what was known on its night), within the training window; NULL when this night did not drift. A night
-- whose features and predictions did not drift ends the run, and so does a change of champion (a new
-- champion's reference window is another one, so its drift is a new run). With it: whether an earlier night
-- of the run, or an earlier run of this night (a catch-up re-judging it), already waited for labels: ops were
-- mailed then.
WITH run AS (
SELECT m.interval_start, m.action
FROM ops.monitoring_current AS m
WHERE m.dataset = %(dataset)s
  AND m.interval_start <= %(start)s
  AND m.interval_start >= %(window_start)s
  AND m.champion_version = %(champion_version)s
  AND (cardinality(m.drifted_features) > 0 OR m.prediction_drift)
  AND m.interval_start > COALESCE(
      (SELECT max(h.interval_start) FROM ops.monitoring_current AS h
       WHERE h.dataset = %(dataset)s
         AND h.interval_start <= %(start)s
         AND h.interval_start >= %(window_start)s
         AND (h.champion_version IS DISTINCT FROM %(champion_version)s
              OR (cardinality(h.drifted_features) = 0 AND NOT h.prediction_drift))),
      '-infinity'::timestamptz)
)
SELECT min(interval_start),
       COALESCE(bool_or(action = 'awaiting_labels' AND interval_start < %(start)s), false)
       OR EXISTS (SELECT 1 FROM ops.monitoring_runs AS r
                  WHERE r.dataset = %(dataset)s AND r.interval_start = %(start)s AND NOT r.is_current
                    AND r.action = 'awaiting_labels')
FROM run
