-- The rows of the intervals starting in [start, end) that the model scores: key, event time and, for rows
-- of several intervals, interval start (passed back untouched with the score), then the features in their
-- own types (nightly_ml.modeling.chunk_scores turns booleans into the model's 'true'/'false'). ADBC streams
-- it as a binary COPY only without parameters: the bounds are literals
-- (nightly_ml.modeling.scoring.write_predictions).
SELECT {columns}
FROM {warehouse}
WHERE _interval_start >= {start}
  AND _interval_start < {end}
