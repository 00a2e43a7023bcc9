-- Per-dataset tables, typed from the dataset spec. Identifiers are filled in by nightly_ml.db.
-- The schema comes from migration 0001: the pipeline's writer role may not create schemas.

-- The warehouse is partitioned by interval (one partition per data interval, nightly_ml.partitions):
-- a merge builds the interval's partition on its own, with its indexes built in bulk, and swaps it in.
-- The DEFAULT partition catches rows written by anything but the merge (and a table from before the
-- partitioning, nightly_ml.db.ensure_dataset_tables); a merge moves its interval out of it.
-- A key is unique within its interval here; validation keeps it unique across intervals (key_elsewhere),
-- and the merge checks it again before the swap.
CREATE TABLE IF NOT EXISTS {warehouse} (
    {key} {key_type} NOT NULL,
    {event_time} timestamptz NOT NULL,
    {feature_columns},
    {label} {label_type},
    -- the data interval whose run loaded the row, so an interval can be replaced as a whole
    _interval_start timestamptz NOT NULL,
    _interval_end timestamptz NOT NULL,
    -- start of the interval whose run delivered a late label (NULL: label came with the row)
    _label_interval_start timestamptz,
    -- a 64-bit hash (hex) of the row as loaded: the basis of the per-interval checksum in ops.load_audit
    _row_hash text NOT NULL,
    PRIMARY KEY ({key}, _interval_start)
) PARTITION BY LIST (_interval_start);
CREATE TABLE IF NOT EXISTS {default_partition} PARTITION OF {warehouse} DEFAULT;
CREATE INDEX IF NOT EXISTS {event_time_index} ON {warehouse} ({event_time});
-- No index on _interval_start in an interval's partition, which holds one value: the listings of the
-- newest intervals (monitoring_newest_intervals.sql) start from the partitions' bounds. Only the DEFAULT
-- partition, which may hold many intervals, has one (a loose index scan lists them). Tables of before
-- lose theirs: building it cost the merge and scoring 0.3 s per 1M rows.
DROP INDEX IF EXISTS {interval_index};
CREATE INDEX IF NOT EXISTS {default_interval_index} ON {default_partition} (_interval_start);

-- Partitioned like the warehouse: scoring an interval builds its partition and swaps it in. No key index:
-- an interval's predictions are rebuilt as a whole from its warehouse partition, whose primary key makes
-- them one per key, and every reader selects them by interval and joins them by hash (the primary key
-- this table had cost 1.5-2 s per 1M rows scored).
CREATE TABLE IF NOT EXISTS {predictions} (
    {key} {key_type} NOT NULL,
    {event_time} timestamptz NOT NULL,
    _interval_start timestamptz NOT NULL,
    -- regression: the predicted value; classification: the probability of the positive class
    prediction double precision NOT NULL,
    -- classification only: the label at the model's decision threshold
    predicted_label bigint,
    model_name text NOT NULL,
    model_version text NOT NULL
) PARTITION BY LIST (_interval_start);
CREATE TABLE IF NOT EXISTS {predictions_default} PARTITION OF {predictions} DEFAULT;
DROP INDEX IF EXISTS {predictions_interval_index};
CREATE INDEX IF NOT EXISTS {predictions_default_interval_index} ON {predictions_default} (_interval_start);
