-- The rows of the intervals starting in [start, end) that the model scores.
SELECT {columns}
FROM {warehouse}
WHERE _interval_start >= %(start)s
  AND _interval_start < %(end)s
