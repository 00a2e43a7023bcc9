-- The model versions an interval's stored predictions came from, most rows first.
SELECT model_version, count(*) AS rows
FROM {predictions}
WHERE _interval_start >= %(start)s AND _interval_start < %(end)s
GROUP BY model_version
ORDER BY rows DESC, model_version
