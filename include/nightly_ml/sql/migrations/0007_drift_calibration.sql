-- Drift thresholds calibrated to the batch's size (nightly_ml.monitoring.calibration): each metric row
-- keeps the threshold it was judged by and where it came from, so reports and history show them.
ALTER TABLE ops.drift_metrics
    -- the PSI the batch had to reach: the null_level quantile of the simulated null
    ADD COLUMN IF NOT EXISTS psi_threshold double precision,
    -- P(null PSI >= observed PSI)
    ADD COLUMN IF NOT EXISTS null_pvalue double precision,
    -- 1 - false_alarm_rate / number of tests
    ADD COLUMN IF NOT EXISTS null_level double precision,
    -- 'intervals' (whole reference intervals drawn) or 'rows' (i.i.d. rows: too few intervals)
    ADD COLUMN IF NOT EXISTS null_method text,
    -- false when the batch had fewer rows than drift.min_rows_per_test
    ADD COLUMN IF NOT EXISTS tested boolean NOT NULL DEFAULT true,
    -- the calibrated soft mean-shift tolerance (allowed |current - reference mean|)
    ADD COLUMN IF NOT EXISTS mean_tolerance double precision;

ALTER TABLE ops.monitoring_runs
    ADD COLUMN IF NOT EXISTS false_alarm_rate double precision,
    -- start of the oldest interval pooled into the current sample (drift.window_intervals)
    ADD COLUMN IF NOT EXISTS pool_start timestamptz;
