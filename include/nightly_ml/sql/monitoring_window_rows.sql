-- Rows in the reference window and in the current interval.
SELECT
    (SELECT count(*) FROM {table} WHERE {event_time} >= %(ref_start)s AND {event_time} < %(ref_end)s) AS reference_rows,
    (SELECT count(*) FROM {table} WHERE {event_time} >= %(cur_start)s AND {event_time} < %(cur_end)s) AS current_rows
