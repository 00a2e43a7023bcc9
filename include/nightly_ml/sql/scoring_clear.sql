-- Remove earlier predictions of the intervals starting in [start, end), and of any key those
-- intervals now hold (a row re-delivered by a later interval moves there), so a re-run
-- replaces instead of duplicating.
DELETE FROM {predictions} AS p
WHERE (p._interval_start >= %(start)s AND p._interval_start < %(end)s)
   OR p.{key} IN (
        SELECT w.{key} FROM {warehouse} AS w
        WHERE w._interval_start >= %(start)s AND w._interval_start < %(end)s
   )
