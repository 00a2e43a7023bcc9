-- Per interval of the champion's training window: non-null rows, mean and population variance of each
-- numeric feature ({aggregates} holds one count/avg/var_pop triple per feature). The soft mean-shift
-- tolerance comes from how much these interval means spread, not from the row standard deviation.
SELECT _interval_start, {aggregates}
FROM {table}
WHERE {event_time} >= %(start)s AND {event_time} < %(end)s
GROUP BY _interval_start
ORDER BY _interval_start
