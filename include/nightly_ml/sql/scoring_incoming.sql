-- The table the chunks' predictions stream into (no index yet): it becomes the interval's partition. When
-- every row scored is of one interval, a CHECK of its bound tests each row as it comes in:
-- attaching the table then proves its rows by it instead of reading them again. The model's name and version,
-- the same on every row, are the columns' defaults while the rows come in, so that the stream does not
-- carry them, and so is the interval's start when every row is of the one interval
-- (scoring_partition_ready.sql drops them again).
DROP TABLE IF EXISTS {incoming};
CREATE TABLE {incoming} (LIKE {predictions} INCLUDING DEFAULTS{bound_check});
ALTER TABLE {incoming} ALTER COLUMN model_name SET DEFAULT {model_name},
    ALTER COLUMN model_version SET DEFAULT {model_version}{interval_default};
