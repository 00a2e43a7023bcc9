-- Which version scored an interval, how many rows, and which load of the interval it scored (a re-score
-- replaces the record, in the transaction that replaces the predictions; scoring_load.sql read the load).
INSERT INTO ops.scoring_runs (dataset, interval_start, interval_end, model_version, rows, load_finished_at, scored_at)
VALUES (
    %(dataset)s, %(start)s, %(end)s, %(model_version)s, %(rows)s, %(load_finished_at)s, now()
)
ON CONFLICT (dataset, interval_start) DO UPDATE SET
    interval_end = EXCLUDED.interval_end, model_version = EXCLUDED.model_version, rows = EXCLUDED.rows,
    load_finished_at = EXCLUDED.load_finished_at, scored_at = EXCLUDED.scored_at
