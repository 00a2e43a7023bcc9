-- The table the chunks' predictions stream into (no index yet): it becomes the interval's partition. When
-- every row scored is of one interval, {bound_check} holds its bound (each row is checked as it comes in):
-- attaching the table then proves its rows by it instead of reading them again.
DROP TABLE IF EXISTS {incoming};
CREATE TABLE {incoming} (LIKE {predictions} INCLUDING DEFAULTS{bound_check})
