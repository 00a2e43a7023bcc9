-- Core schemas and operational tables shared by every dataset.
CREATE SCHEMA IF NOT EXISTS warehouse;
CREATE SCHEMA IF NOT EXISTS staging;
CREATE SCHEMA IF NOT EXISTS ops;

-- One row per dataset and interval: the outcome of the latest load of that interval.
CREATE TABLE IF NOT EXISTS ops.load_audit (
    dataset text NOT NULL,
    interval_start timestamptz NOT NULL,
    interval_end timestamptz NOT NULL,
    run_id text NOT NULL,
    status text NOT NULL CHECK (status IN ('merged', 'rejected')),
    rows_in bigint NOT NULL,
    rows_merged bigint NOT NULL,
    rows_quarantined bigint NOT NULL,
    labels_in bigint NOT NULL DEFAULT 0,
    labels_applied bigint NOT NULL DEFAULT 0,
    checksum text,
    reason text,
    files jsonb NOT NULL DEFAULT '[]'::jsonb,
    data_docs_url text,
    soft_failures jsonb NOT NULL DEFAULT '[]'::jsonb,
    finished_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dataset, interval_start)
);

-- Rows that broke a rule, kept with the rule and the row itself, per interval.
CREATE TABLE IF NOT EXISTS ops.quarantine (
    id bigserial PRIMARY KEY,
    dataset text NOT NULL,
    interval_start timestamptz NOT NULL,
    interval_end timestamptz NOT NULL,
    run_id text NOT NULL,
    source_file text,
    line_number bigint,
    rule text NOT NULL,
    detail text,
    row_data jsonb,
    raw_line text
);
CREATE INDEX IF NOT EXISTS quarantine_dataset_interval_idx ON ops.quarantine (dataset, interval_start);

-- Casting helpers for validation views: NULL instead of an error for a malformed value.
CREATE OR REPLACE FUNCTION ops.try_timestamptz(value text) RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN value::timestamptz;
EXCEPTION WHEN others THEN
    RETURN NULL;
END;
$$;
