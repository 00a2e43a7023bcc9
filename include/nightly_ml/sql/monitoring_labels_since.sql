-- The labelled rows whose event time lies in [since, end), as known on the night ending at end (a label that
-- came with a later interval's load does not count, so a re-run judges as the night did): how many, and the
-- newest event time among them.
SELECT count(*), max({event_time})
FROM {warehouse}
WHERE {label} IS NOT NULL
  AND {event_time} >= %(since)s AND {event_time} < %(end)s
  AND coalesce(_label_interval_start, _interval_start) < %(end)s
