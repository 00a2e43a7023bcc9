-- Plain aggregates of every monitored feature over one event-time window, in one scan: the reference
-- quantiles (bin edges) when filling the reference profile, the sizes, means and sds of a sample.
SELECT {aggregates}
FROM {table}
WHERE {event_time} >= %(start)s AND {event_time} < %(end)s
