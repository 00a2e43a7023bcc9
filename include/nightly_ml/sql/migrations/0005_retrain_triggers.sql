-- Retraining the monitor triggered, per dataset and interval: the basis of the cool-down that keeps
-- a lasting shift from triggering (and mailing) a retrain every night.
CREATE TABLE IF NOT EXISTS ops.retrain_triggers (
    dataset text NOT NULL,
    interval_start timestamptz NOT NULL,
    interval_end timestamptz NOT NULL,
    reasons jsonb NOT NULL DEFAULT '[]'::jsonb,
    PRIMARY KEY (dataset, interval_start)
);
