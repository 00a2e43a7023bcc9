-- Per-dataset tables, typed from the dataset spec. Identifiers are filled in by nightly_ml.db.
-- The schema comes from migration 0001: the pipeline's writer role may not create schemas.

CREATE TABLE IF NOT EXISTS {warehouse} (
    {key} {key_type} PRIMARY KEY,
    {event_time} timestamptz NOT NULL,
    {feature_columns},
    {label} {label_type},
    -- the data interval whose run loaded the row, so an interval can be replaced as a whole
    _interval_start timestamptz NOT NULL,
    _interval_end timestamptz NOT NULL,
    -- start of the interval whose run delivered a late label (NULL: label came with the row)
    _label_interval_start timestamptz,
    -- md5 of the row as loaded: the basis of the per-interval checksum in ops.load_audit
    _row_hash text NOT NULL
);
CREATE INDEX IF NOT EXISTS {event_time_index} ON {warehouse} ({event_time});
CREATE INDEX IF NOT EXISTS {interval_index} ON {warehouse} (_interval_start);

CREATE TABLE IF NOT EXISTS {predictions} (
    {key} {key_type} PRIMARY KEY,
    {event_time} timestamptz NOT NULL,
    _interval_start timestamptz NOT NULL,
    -- regression: the predicted value; classification: the probability of the positive class
    prediction double precision NOT NULL,
    -- classification only: the label at the model's decision threshold
    predicted_label bigint,
    model_name text NOT NULL,
    model_version text NOT NULL
);
CREATE INDEX IF NOT EXISTS {predictions_interval_index} ON {predictions} (_interval_start);
