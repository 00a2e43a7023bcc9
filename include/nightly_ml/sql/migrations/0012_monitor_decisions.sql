-- What every monitor run decided for every interval, including the nights ops.monitoring_runs cannot hold: no
-- champion yet (the bootstrap retrain), an interval that was not merged (stop), an interval nobody scored on its
-- night (nothing to judge). One row per interval AND per Airflow run, never overwritten by a later run; a retry
-- of the same run replaces its own row. champion_version is the version judged (NULL: none).
CREATE TABLE IF NOT EXISTS ops.monitor_decisions (
    dataset text NOT NULL,
    interval_start timestamptz NOT NULL,
    interval_end timestamptz NOT NULL,
    run_id text NOT NULL,
    action text NOT NULL,
    should_retrain boolean NOT NULL,
    reasons jsonb NOT NULL DEFAULT '[]'::jsonb,
    champion_version text,
    decided_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dataset, interval_start, run_id),
    CHECK (interval_start < interval_end)
);
