-- The labelled rows whose event time lies in [since, end), as known on the night ending at end (a label that
-- came with a later interval's load does not count, so a re-run judges as the night did): how many, and the
-- newest event time among them. A row's event time lies in its interval (validation's bound rule), so the
-- interval bounds let the planner read only the partitions since the drift began.
SELECT count(*), max({event_time})
FROM {warehouse}
WHERE {label} IS NOT NULL
  AND _interval_start >= %(since)s AND _interval_start < %(end)s
  AND {event_time} >= %(since)s AND {event_time} < %(end)s
  AND coalesce(_label_interval_start, _interval_start) < %(end)s
