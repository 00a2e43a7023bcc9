-- Labelled rows of one dataset whose event time falls in the training window [window_start, window_end).
-- Ordered by time (then key) so the same rows always arrive in the same order: same data, same model.
SELECT {columns}
FROM {warehouse}
WHERE {event_time} >= %(window_start)s
  AND {event_time} < %(window_end)s
  AND {label} IS NOT NULL
ORDER BY {event_time}, {key}
