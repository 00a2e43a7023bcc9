-- Drift monitoring: one row per dataset and interval (the verdict), and one row per
-- feature of it (the statistics and the histograms the report plots).
CREATE SCHEMA IF NOT EXISTS ops;

CREATE TABLE IF NOT EXISTS ops.monitoring_runs (
    dataset text NOT NULL,
    interval_start timestamptz NOT NULL,
    interval_end timestamptz NOT NULL,
    run_id text NOT NULL,
    champion_version text,
    -- the champion's training window the interval was compared with
    reference_start timestamptz NOT NULL,
    reference_end timestamptz NOT NULL,
    rows bigint NOT NULL,
    reference_rows bigint NOT NULL,
    drifted_features text[] NOT NULL DEFAULT '{}',
    prediction_psi double precision,
    prediction_drift boolean NOT NULL DEFAULT false,
    -- the scored interval whose predictions were compared (NULL: none scored yet)
    prediction_interval_start timestamptz,
    live_metrics jsonb NOT NULL DEFAULT '{}'::jsonb,
    labelled_rows bigint NOT NULL DEFAULT 0,
    performance_decay boolean NOT NULL DEFAULT false,
    soft_failures jsonb NOT NULL DEFAULT '[]'::jsonb,
    should_retrain boolean NOT NULL,
    reasons jsonb NOT NULL DEFAULT '[]'::jsonb,
    report_path text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dataset, interval_start),
    CHECK (interval_start < interval_end),
    CHECK (reference_start < reference_end)
);

CREATE TABLE IF NOT EXISTS ops.drift_metrics (
    dataset text NOT NULL,
    interval_start timestamptz NOT NULL,
    -- a spec feature name, or '_prediction' for the champion's predictions
    feature text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('numeric', 'categorical', 'prediction')),
    psi double precision,
    ks_statistic double precision,
    ks_pvalue double precision,
    chi2_statistic double precision,
    chi2_pvalue double precision,
    cramers_v double precision,
    unseen_share double precision,
    ref_rows bigint,
    cur_rows bigint,
    ref_mean double precision,
    cur_mean double precision,
    ref_sd double precision,
    cur_sd double precision,
    ref_null_share double precision,
    cur_null_share double precision,
    drifted boolean NOT NULL,
    reason text NOT NULL,
    -- {"labels": [...], "edges": [...], "reference": [counts], "current": [counts]}
    histogram jsonb NOT NULL,
    run_id text NOT NULL,
    PRIMARY KEY (dataset, interval_start, feature),
    FOREIGN KEY (dataset, interval_start) REFERENCES ops.monitoring_runs (dataset, interval_start) ON DELETE CASCADE
);
