-- (label, prediction) pairs for live performance: rows of the evaluation window whose
-- label had arrived by the end of the monitored interval, scored by the champion under the row's own
-- interval. A label delivered by a later interval's run is left out, so a re-run of a past
-- interval sees exactly the labels its first run saw. The newest rows win the cap.
-- Only the predictions of the intervals the window's rows are in are read (the predictions table keeps no
-- index on the key, and a join by key alone read every interval ever scored): from first_interval, the
-- interval of the window's earliest row (monitoring_window_first_interval.sql), to the window's end. Both
-- bounds are literals, so the planner skips the other partitions and knows how many rows it joins (with
-- the bound as a subquery it guessed a few and probed the warehouse's key index 1.4M times: 2.7 s, not 1.6).
SELECT CAST(CAST(w.{label} AS {label_cast}) AS float8) AS label, p.prediction
FROM {warehouse} AS w
JOIN {predictions} AS p ON p.{key} = w.{key} AND p._interval_start = w._interval_start
WHERE w.{event_time} >= %(window_start)s AND w.{event_time} < %(window_end)s
  AND w.{label} IS NOT NULL
  AND (w._label_interval_start IS NULL OR w._label_interval_start < %(window_end)s)
  AND (CAST(%(model_version)s AS text) IS NULL OR p.model_version = %(model_version)s)
  AND p._interval_start < %(window_end)s
  AND p._interval_start >= %(first_interval)s
ORDER BY w.{event_time} DESC, w.{key}
LIMIT %(max_rows)s
