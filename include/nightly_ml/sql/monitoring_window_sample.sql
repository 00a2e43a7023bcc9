-- One sample for the drift statistics: a column's values in an event-time window, tagged
-- with the sample's name ('reference' or 'current') and the interval that loaded each row
-- (the calibrated null draws whole intervals). Embedded in the monitoring_* queries.
SELECT {sample} AS sample, _interval_start AS interval_start, CAST({column} AS {value_type}) AS v
FROM {table}
WHERE {event_time} >= {start} AND {event_time} < {end}
