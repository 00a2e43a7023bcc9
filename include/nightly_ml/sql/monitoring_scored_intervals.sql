-- The newest scored intervals strictly before a moment, newest first, by one model
-- version (every version when NULL). A loose index scan on _interval_start: one index
-- probe per interval instead of reading every prediction.
WITH RECURSIVE scored (interval_start, depth) AS (
    (SELECT _interval_start, 1
     FROM {predictions}
     WHERE _interval_start < %(before)s
       AND (CAST(%(model_version)s AS text) IS NULL OR model_version = %(model_version)s)
     ORDER BY _interval_start DESC
     LIMIT 1)
    UNION ALL
    SELECT (SELECT p._interval_start
            FROM {predictions} AS p
            WHERE p._interval_start < scored.interval_start
              AND (CAST(%(model_version)s AS text) IS NULL OR p.model_version = %(model_version)s)
            ORDER BY p._interval_start DESC
            LIMIT 1),
           depth + 1
    FROM scored
    WHERE scored.interval_start IS NOT NULL AND depth < %(limit)s
)
SELECT interval_start FROM scored WHERE interval_start IS NOT NULL ORDER BY interval_start DESC
