-- The outcome of the latest load of an interval (a re-run replaces it).
INSERT INTO ops.load_audit (dataset, interval_start, interval_end, run_id, status, rows_in, rows_merged,
                            rows_quarantined, labels_in, labels_applied, checksum, reason, files, data_docs_url,
                            soft_failures, finished_at)
VALUES (%(dataset)s, %(start)s, %(end)s, %(run_id)s, %(status)s, %(rows_in)s, %(rows_merged)s,
        %(rows_quarantined)s, %(labels_in)s, %(labels_applied)s, %(checksum)s, %(reason)s, %(files)s::jsonb,
        %(data_docs_url)s, %(soft_failures)s::jsonb, now())
ON CONFLICT (dataset, interval_start) DO UPDATE SET
    interval_end = EXCLUDED.interval_end, run_id = EXCLUDED.run_id, status = EXCLUDED.status,
    rows_in = EXCLUDED.rows_in, rows_merged = EXCLUDED.rows_merged, rows_quarantined = EXCLUDED.rows_quarantined,
    labels_in = EXCLUDED.labels_in, labels_applied = EXCLUDED.labels_applied, checksum = EXCLUDED.checksum,
    reason = EXCLUDED.reason, files = EXCLUDED.files, data_docs_url = EXCLUDED.data_docs_url,
    soft_failures = EXCLUDED.soft_failures, finished_at = EXCLUDED.finished_at;
