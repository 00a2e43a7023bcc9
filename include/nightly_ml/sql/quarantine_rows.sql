-- Every bad row, once per rule it broke: _broken holds the positions of those rules in the lists
-- %(rules)s / %(details)s. The record keeps the raw staging row.
INSERT INTO ops.quarantine (dataset, interval_start, interval_end, run_id, source_file, line_number, rule, detail,
                            staging_row_id, row_data)
SELECT %(dataset)s, %(start)s, %(end)s, %(run_id)s, s._source_file, s._line_number, r.rule, r.detail, s._row_id,
       to_jsonb(s) - '_row_id' - '_source_file' - '_line_number'
FROM {bad} AS b
JOIN {staging} AS s USING (_row_id)
CROSS JOIN LATERAL unnest(b._broken) AS f (position)
JOIN unnest(%(rules)s::text[], %(details)s::text[]) WITH ORDINALITY AS r (rule, detail, position)
    ON r.position = f.position
ORDER BY f.position, s._row_id;
