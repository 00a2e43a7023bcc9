-- Quarantined input rows of one interval: a staging row that broke several rules counts once;
-- unreadable lines and unusable late labels count one each.
SELECT count(DISTINCT staging_row_id) + count(*) FILTER (WHERE staging_row_id IS NULL)
FROM ops.quarantine
WHERE dataset = %(dataset)s AND interval_start = %(start)s;
