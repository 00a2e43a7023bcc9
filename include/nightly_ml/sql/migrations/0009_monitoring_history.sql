-- Monitoring history is kept, never overwritten: one row per interval AND per Airflow run (the run id, the
-- champion version it judged, when), its drift metrics keyed the same way. A later run of an interval adds
-- rows and becomes the interval's current one: is_current is flipped in the same transaction that inserts
-- it, and a partial unique index allows one current row per interval. A retry of the same Airflow run
-- replaces that run's own rows (idempotent per run).
ALTER TABLE ops.drift_metrics DROP CONSTRAINT IF EXISTS drift_metrics_dataset_interval_start_fkey;
ALTER TABLE ops.drift_metrics DROP CONSTRAINT IF EXISTS drift_metrics_pkey;
ALTER TABLE ops.monitoring_runs DROP CONSTRAINT IF EXISTS monitoring_runs_pkey;

ALTER TABLE ops.monitoring_runs
    ADD COLUMN IF NOT EXISTS is_current boolean NOT NULL DEFAULT true,
    -- what the monitor task did with the verdict: retrain, cooldown, none, ... (NULL: not decided by a task)
    ADD COLUMN IF NOT EXISTS action text,
    -- this run's own copy of the drift report (report_path is the interval's latest report)
    ADD COLUMN IF NOT EXISTS run_report_path text,
    ADD PRIMARY KEY (dataset, interval_start, run_id);

CREATE UNIQUE INDEX IF NOT EXISTS monitoring_runs_current_idx
    ON ops.monitoring_runs (dataset, interval_start) WHERE is_current;

ALTER TABLE ops.drift_metrics
    ADD PRIMARY KEY (dataset, interval_start, run_id, feature),
    ADD FOREIGN KEY (dataset, interval_start, run_id)
        REFERENCES ops.monitoring_runs (dataset, interval_start, run_id) ON DELETE CASCADE;

-- The current verdict of each interval (what reports, the demo and the backtest read).
CREATE OR REPLACE VIEW ops.monitoring_current AS
SELECT * FROM ops.monitoring_runs WHERE is_current;

-- Which model version scored each interval, and which load of it (ops.load_audit.finished_at): a catch-up or
-- backfill run leaves an interval alone when the version of its night already scored its current load.
CREATE TABLE IF NOT EXISTS ops.scoring_runs (
    dataset text NOT NULL,
    interval_start timestamptz NOT NULL,
    interval_end timestamptz NOT NULL,
    model_version text NOT NULL,
    rows bigint NOT NULL,
    load_finished_at timestamptz,
    scored_at timestamptz NOT NULL,
    PRIMARY KEY (dataset, interval_start)
);
