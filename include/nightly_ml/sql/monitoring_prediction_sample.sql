-- One sample of stored predictions: the given scored intervals, by one model version
-- (every version when it is NULL). Embedded in the monitoring_* queries.
SELECT {sample} AS sample, _interval_start AS interval_start, prediction AS v
FROM {predictions}
WHERE _interval_start = ANY(CAST({intervals} AS timestamptz[]))
  AND (CAST({model_version} AS text) IS NULL OR model_version = {model_version})
