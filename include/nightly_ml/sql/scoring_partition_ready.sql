-- An interval's predictions partition, once its rows are in: its one index (the predictions table's, so
-- attaching adopts it) built in bulk, and statistics for the readers' plans.
CREATE INDEX ON {building} (_interval_start);
ANALYZE {building};
