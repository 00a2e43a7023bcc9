-- Whether another (earlier) run's pass over an interval already triggered retraining.
SELECT EXISTS (
    SELECT 1 FROM ops.monitoring_runs
    WHERE dataset = %(dataset)s AND interval_start = %(start)s AND run_id <> %(run_id)s AND action = 'retrain'
)
