-- Which version scored an interval, how many rows, and which load of the interval it scored (a re-score
-- replaces the record, in the transaction that replaces the predictions).
INSERT INTO ops.scoring_runs (dataset, interval_start, interval_end, model_version, rows, load_finished_at, scored_at)
VALUES (
    %(dataset)s, %(start)s, %(end)s, %(model_version)s, %(rows)s,
    (SELECT finished_at FROM ops.load_audit WHERE dataset = %(dataset)s AND interval_start = %(start)s),
    now()
)
ON CONFLICT (dataset, interval_start) DO UPDATE SET
    interval_end = EXCLUDED.interval_end, model_version = EXCLUDED.model_version, rows = EXCLUDED.rows,
    load_finished_at = EXCLUDED.load_finished_at, scored_at = EXCLUDED.scored_at
