-- Totals of the demo's loads for one dataset.
SELECT count(*) FILTER (WHERE status = 'merged'), count(*) FILTER (WHERE status = 'rejected'),
       coalesce(sum(rows_merged), 0), coalesce(sum(rows_quarantined), 0), coalesce(sum(labels_applied), 0)
FROM ops.load_audit WHERE dataset = %(dataset)s;
