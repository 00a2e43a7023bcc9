-- Late labels: upsert by key onto rows already in the warehouse (the last label of a key wins);
-- labels for unknown keys or with unusable values go to quarantine.
WITH typed AS (
    SELECT DISTINCT ON (k) _row_id, _source_file, _line_number, {key} AS raw_key, {label} AS raw_label,
           k, label_value
    FROM (SELECT *, {key_value} AS k, {label_value} AS label_value FROM {labels}) AS l
    ORDER BY k, _row_id DESC
),
checked AS (
    SELECT t.*, w.{key} IS NOT NULL AS known, (t.label_value IS NOT NULL AND {in_range}) AS usable
    FROM typed AS t LEFT JOIN {warehouse} AS w ON w.{key} = t.k
),
quarantined AS (
    INSERT INTO ops.quarantine (dataset, interval_start, interval_end, run_id, source_file, line_number, rule, detail, row_data)
    SELECT %(dataset)s, %(start)s, %(end)s, %(run_id)s, c._source_file, c._line_number,
           CASE WHEN NOT c.known THEN 'label_unknown_key' ELSE 'label_invalid' END,
           CASE WHEN NOT c.known THEN 'a late label for a key that is not in the warehouse'
                ELSE 'a late label that is missing, of the wrong type or out of range' END,
           jsonb_build_object('key', c.raw_key, 'label', c.raw_label)
    FROM checked AS c
    WHERE NOT (c.known AND c.usable)
    RETURNING 1
),
applied AS (
    UPDATE {warehouse} AS w
    SET {label} = c.label_value, _label_interval_start = %(start)s
    FROM checked AS c
    WHERE w.{key} = c.k AND c.known AND c.usable
    RETURNING 1
)
SELECT (SELECT count(*) FROM {labels}), (SELECT count(*) FROM applied);
