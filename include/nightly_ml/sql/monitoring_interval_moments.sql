-- Per loaded interval of the reference window: non-null rows, mean and population variance of every
-- numeric feature (the soft mean-shift tolerance's inputs), in one scan.
SELECT _interval_start AS interval_start, {aggregates}
FROM {table}
WHERE {event_time} >= %(start)s AND {event_time} < %(end)s
GROUP BY _interval_start
ORDER BY _interval_start
