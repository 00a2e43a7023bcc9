-- How many labelled rows of the window [window_start, window_end) were known at window_end (label delivered
-- by an interval that was over by then): the cheap check before a point-in-time training frame is read.
SELECT count(*)
FROM {warehouse}
WHERE {event_time} >= %(window_start)s
  AND {event_time} < %(window_end)s
  AND {label} IS NOT NULL
  AND coalesce(_label_interval_start, _interval_start) < %(window_end)s
