-- What the monitor task did with a run's verdict (retrain, cooldown, none, ...), on that run's own row.
UPDATE ops.monitoring_runs SET action = %(action)s
WHERE dataset = %(dataset)s AND interval_start = %(interval_start)s AND run_id = %(run_id)s;
