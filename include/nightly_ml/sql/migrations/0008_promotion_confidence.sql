-- What a gate decision rested on, queryable: the primary metric, the margin it had to beat, the
-- bootstrap confidence (against the reference it was judged by, and against the naive baseline),
-- the holdout window it was judged on and the interval whose run triggered the retrain.
-- NULL where not applicable (rollbacks) or not assessed (no per-row scores).
ALTER TABLE ops.promotion_history
    ADD COLUMN IF NOT EXISTS primary_metric text,
    -- the improvement required on the primary metric, in its units (relative margins resolved)
    ADD COLUMN IF NOT EXISTS margin double precision,
    -- share of paired bootstrap resamples in which the challenger beat the reference by the margin
    ADD COLUMN IF NOT EXISTS confidence double precision,
    ADD COLUMN IF NOT EXISTS required_confidence double precision,
    ADD COLUMN IF NOT EXISTS baseline_confidence double precision,
    -- resamples, blocks and how the holdout was cut into blocks
    ADD COLUMN IF NOT EXISTS bootstrap jsonb,
    ADD COLUMN IF NOT EXISTS holdout_start timestamptz,
    ADD COLUMN IF NOT EXISTS holdout_end timestamptz,
    ADD COLUMN IF NOT EXISTS interval_start timestamptz,
    ADD COLUMN IF NOT EXISTS interval_end timestamptz;
