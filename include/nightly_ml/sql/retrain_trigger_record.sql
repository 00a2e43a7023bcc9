-- Record that monitoring of an interval triggered retraining (a re-run replaces the row).
INSERT INTO ops.retrain_triggers (dataset, interval_start, interval_end, reasons)
VALUES (%(dataset)s, %(start)s, %(end)s, %(reasons)s::jsonb)
ON CONFLICT (dataset, interval_start) DO UPDATE SET interval_end = EXCLUDED.interval_end, reasons = EXCLUDED.reasons;
