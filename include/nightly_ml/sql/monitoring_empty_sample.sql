-- A current sample with no rows, for a query that needs only the reference side of a sample pair
-- (the columns of monitoring_prediction_sample.sql).
SELECT CAST('current' AS text) AS sample, CAST(NULL AS timestamptz) AS interval_start, CAST(NULL AS float8) AS v
WHERE false
