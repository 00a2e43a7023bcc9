-- Remove earlier predictions of the intervals starting in [start, end), so a re-run replaces instead of
-- duplicating (scoring_clear_moved.sql removes those of keys the intervals now hold). Two statements, not
-- one with OR: "interval OR key IN (subquery)" cannot become a join, and once the interval's keys no
-- longer fit in work_mem as a hash, PostgreSQL rescans them for every other prediction (quadratic).
DELETE FROM {predictions} AS p
WHERE p._interval_start >= %(start)s AND p._interval_start < %(end)s
