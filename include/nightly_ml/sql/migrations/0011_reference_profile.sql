-- The reference side of the drift statistics, computed once per champion version instead of every night:
-- per monitored feature the bin edges, the per-interval bin (or category) counts the calibrated null draws
-- from, a fine quantile grid's counts (the KS statistic's bounds), moments and sample sizes. A profile is
-- only used for the same reference window and the same number of reference rows it was computed from.
CREATE TABLE IF NOT EXISTS ops.reference_profile (
    model_name text NOT NULL,
    model_version text NOT NULL,
    feature text NOT NULL,
    dataset text NOT NULL,
    reference_start timestamptz NOT NULL,
    reference_end timestamptz NOT NULL,
    reference_rows bigint NOT NULL,
    profile jsonb NOT NULL,
    computed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_name, model_version, feature)
);
