-- Counts of every monitored feature in one scan of an event-time window: numeric features by their
-- fine-grid bin (width_bucket on the reference's quantiles), categories by value (NULL its own group).
-- One grouping set per feature (with the loaded interval for the reference); GROUPING() tells which
-- feature a row counts.
SELECT GROUPING({keys}) AS grouping_mask, {select_keys}, count(*) AS n
FROM (
    SELECT _interval_start AS interval_start, {expressions}
    FROM {table}
    WHERE {event_time} >= %(start)s AND {event_time} < %(end)s
) AS s
GROUP BY GROUPING SETS ({sets})
