-- Rows that broke one rule; failing_rows is the query GX returned for that rule's failures.
WITH failing AS (
    SELECT DISTINCT f._row_id FROM ({failing_rows}) AS f
), quarantined AS (
    INSERT INTO ops.quarantine (dataset, interval_start, interval_end, run_id, source_file, line_number, rule, detail,
                                staging_row_id, row_data)
    SELECT %(dataset)s, %(start)s, %(end)s, %(run_id)s, s._source_file, s._line_number, %(rule)s, %(detail)s, s._row_id,
           to_jsonb(s) - '_row_id' - '_source_file' - '_line_number'
    FROM {staging} AS s JOIN failing USING (_row_id)
    RETURNING 1
)
INSERT INTO {bad} (_row_id)
SELECT _row_id FROM failing
ON CONFLICT (_row_id) DO NOTHING;
