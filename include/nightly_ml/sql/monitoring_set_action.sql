-- What the monitor task did with a run's verdict (retrain, cooldown, awaiting_labels, none, ...) and why (the
-- verdict's reasons and the decision's own: a cool-down, a wait for labels, where a decay began), on that
-- run's own row.
UPDATE ops.monitoring_runs SET action = %(action)s, reasons = CAST(%(reasons)s AS jsonb)
WHERE dataset = %(dataset)s AND interval_start = %(interval_start)s AND run_id = %(run_id)s;
