-- The replayed intervals of a dataset that start in [range_start, range_end): every audited load (merged or
-- rejected) and any interval the warehouse holds without an audit row, with its rows, the rows the pipeline
-- scored and the model version that scored most of them (one per interval in a clean replay).
WITH audited AS (
    SELECT interval_start, interval_end, status, rows_in, rows_quarantined
    FROM ops.load_audit
    WHERE dataset = %(dataset)s AND interval_start >= %(range_start)s AND interval_start < %(range_end)s
),
stored AS (
    SELECT _interval_start AS interval_start, max(_interval_end) AS interval_end, count(*) AS stored_rows
    FROM {warehouse}
    WHERE _interval_start >= %(range_start)s AND _interval_start < %(range_end)s
    GROUP BY _interval_start
),
scored AS (
    SELECT _interval_start AS interval_start,
           count(*) AS rows_scored,
           mode() WITHIN GROUP (ORDER BY model_version) AS model_version
    FROM {predictions}
    WHERE _interval_start >= %(range_start)s AND _interval_start < %(range_end)s
    GROUP BY _interval_start
)
SELECT interval_start,
       coalesce(a.interval_end, s.interval_end) AS interval_end,
       coalesce(a.status, 'unaudited') AS status,
       coalesce(s.stored_rows, 0) AS stored_rows,
       coalesce(p.rows_scored, 0) AS rows_scored,
       p.model_version,
       coalesce(a.rows_in, 0) AS rows_in,
       coalesce(a.rows_quarantined, 0) AS rows_quarantined
FROM audited AS a
FULL JOIN stored AS s USING (interval_start)
LEFT JOIN scored AS p USING (interval_start)
ORDER BY interval_start
