-- Quarantined input rows of one interval: a row that broke several rules counts once.
SELECT count(DISTINCT (source_file, line_number, row_data::text, raw_line))
FROM ops.quarantine
WHERE dataset = %(dataset)s AND interval_start = %(start)s AND rule NOT LIKE 'label%%';
