-- Labelled rows of a training window: before the holdout (to train on) and in it (to evaluate on).
SELECT count(*) FILTER (WHERE {event_time} < %(holdout_start)s),
       count(*) FILTER (WHERE {event_time} >= %(holdout_start)s)
FROM {warehouse}
WHERE {event_time} >= %(start)s AND {event_time} < %(end)s AND {label} IS NOT NULL;
