-- What the pipeline's policy did in [range_start, range_end): every retrain trigger (drift or decay: each mailed
-- ops but a decay's later nights), every night a drift waited for labels and every gate decision or alias move (promote, reject, rollback: each one
-- mailed), placed at the interval whose run triggered it; a decision without one (a hand-triggered retrain)
-- at its decision time.
SELECT 'trigger' AS kind, interval_start AS placed_at, true AS by_interval,
       NULL::text AS from_version, NULL::text AS to_version, reasons::text AS detail
FROM ops.retrain_triggers
WHERE dataset = %(dataset)s AND interval_start >= %(range_start)s AND interval_start < %(range_end)s
UNION ALL
-- Nights whose drift waited for labels before it retrained (ops were mailed on a drift's first such night).
SELECT 'wait', interval_start, true, NULL::text, NULL::text, reasons::text
FROM ops.monitoring_current
WHERE dataset = %(dataset)s AND action = 'awaiting_labels'
  AND interval_start >= %(range_start)s AND interval_start < %(range_end)s
UNION ALL
SELECT action, coalesce(interval_start, decided_at), interval_start IS NOT NULL,
       from_version, to_version, reason
FROM ops.promotion_history
WHERE dataset = %(dataset)s
  AND coalesce(interval_start, decided_at) >= %(range_start)s
  AND coalesce(interval_start, decided_at) < %(range_end)s
ORDER BY placed_at, kind
