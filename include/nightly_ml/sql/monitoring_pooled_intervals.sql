-- The newest loaded intervals at or before the current one and not before the reference
-- window's end, newest first (at most a limit): the intervals drift.window_intervals pools.
-- A loose index scan on _interval_start: one index probe per interval, not one per row.
WITH RECURSIVE loaded (interval_start, depth) AS (
    (SELECT _interval_start, 1
     FROM {table}
     WHERE _interval_start <= %(cur_start)s AND _interval_start >= %(ref_end)s
     ORDER BY _interval_start DESC
     LIMIT 1)
    UNION ALL
    SELECT (SELECT w._interval_start
            FROM {table} AS w
            WHERE w._interval_start < loaded.interval_start AND w._interval_start >= %(ref_end)s
            ORDER BY w._interval_start DESC
            LIMIT 1),
           depth + 1
    FROM loaded
    WHERE loaded.interval_start IS NOT NULL AND depth < %(limit)s
)
SELECT interval_start FROM loaded WHERE interval_start IS NOT NULL ORDER BY interval_start DESC
