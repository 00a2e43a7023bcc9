-- (label, prediction) pairs for live performance: rows of the evaluation window whose
-- label had arrived by the end of the monitored interval, scored by the champion.
-- A label delivered by a later interval's run is left out, so a re-run of a past
-- interval sees exactly the labels its first run saw. The newest rows win the cap.
SELECT CAST(CAST(w.{label} AS {label_cast}) AS float8) AS label, p.prediction
FROM {warehouse} AS w
JOIN {predictions} AS p ON p.{key} = w.{key}
WHERE w.{event_time} >= %(window_start)s AND w.{event_time} < %(window_end)s
  AND w.{label} IS NOT NULL
  AND (w._label_interval_start IS NULL OR w._label_interval_start < %(window_end)s)
  AND (CAST(%(model_version)s AS text) IS NULL OR p.model_version = %(model_version)s)
ORDER BY w.{event_time} DESC, w.{key}
LIMIT %(max_rows)s
