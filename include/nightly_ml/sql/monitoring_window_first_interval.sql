-- The interval of an event-time window's earliest row: every row of the window is of it or of a later one
-- (an interval's rows lie inside it). One probe of each partition's event-time index.
SELECT _interval_start
FROM {warehouse}
WHERE {event_time} >= %(window_start)s AND {event_time} < %(window_end)s
ORDER BY {event_time}
LIMIT 1
