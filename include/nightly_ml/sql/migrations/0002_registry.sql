-- Every move of a dataset's champion alias, and every rejected challenger: the audit trail
-- that makes rollback one manual run ("previous" = from_version of the latest move).
CREATE TABLE IF NOT EXISTS ops.promotion_history (
    id bigserial PRIMARY KEY,
    dataset text NOT NULL,
    model_name text NOT NULL,
    -- the champion before the decision (NULL: there was none)
    from_version text,
    -- the version promoted, rolled back to, or rejected
    to_version text NOT NULL,
    action text NOT NULL CHECK (action IN ('promote', 'rollback', 'reject')),
    actor text NOT NULL,
    reason text NOT NULL,
    -- holdout metrics of to_version and the gate's primary delta
    metrics jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- the gate's sentences, one per check
    gate_reasons jsonb NOT NULL DEFAULT '[]'::jsonb,
    decided_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS promotion_history_model_idx ON ops.promotion_history (model_name, id DESC);
