-- The first interval of the unbroken run of decayed intervals that ends at this one: where the change that
-- retraining answers began. Read from each interval's current verdict up to this one (what was known on its
-- night), within the training window; NULL when this night was judged healthy. A night whose performance
-- could not be judged (too few labelled rows) neither breaks the run nor starts it; a night judged healthy
-- ends it. The run crosses champions: a champion promoted after the change began and still decaying
-- answers the same change.
SELECT min(m.interval_start)
FROM ops.monitoring_current AS m
WHERE m.dataset = %(dataset)s
  AND m.interval_start <= %(start)s
  AND m.interval_start >= %(window_start)s
  AND m.performance_decay
  AND m.interval_start > COALESCE(
      (SELECT max(h.interval_start) FROM ops.monitoring_current AS h
       WHERE h.dataset = %(dataset)s
         AND h.interval_start <= %(start)s
         AND h.interval_start >= %(window_start)s
         AND NOT h.performance_decay
         AND h.labelled_rows >= %(min_labelled_rows)s),
      '-infinity'::timestamptz)
