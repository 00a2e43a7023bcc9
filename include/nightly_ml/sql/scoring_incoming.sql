-- The table the chunks' predictions stream into (no index yet): it becomes the interval's partition.
DROP TABLE IF EXISTS {incoming};
CREATE TABLE {incoming} (LIKE {predictions} INCLUDING DEFAULTS)
