-- The rows of the intervals starting in [start, end) that the model scores, as CSV for COPY TO STDOUT:
-- key, event time and interval start (passed back untouched with the score), then the features
-- (booleans as 'true'/'false', the strings the model's encoder knows).
COPY (
    SELECT {columns}
    FROM {warehouse}
    WHERE _interval_start >= %(start)s
      AND _interval_start < %(end)s
) TO STDOUT WITH (FORMAT csv, HEADER true)
