-- An interval's predictions partition, once its rows are in: statistics for the readers' plans. (No index:
-- the partition holds one interval, and the listing of scored intervals starts from the partitions' bounds.)
-- From a sample of 3,000 rows (statistics target 10) instead of 30,000: the readers' plans need the row
-- count, the null and distinct counts of the key and the version, and the coarse shape of the scores, which
-- such a sample gives as well (1M rows: 0.012 s instead of 0.074-0.088 s).
-- (The lower target holds until this transaction ends.)
SET LOCAL default_statistics_target = 10;
ANALYZE {building};
-- The defaults the rows came in with (scoring_incoming.sql): the partition has the table's own.
ALTER TABLE {building} ALTER COLUMN model_name DROP DEFAULT, ALTER COLUMN model_version DROP DEFAULT,
    ALTER COLUMN _interval_start DROP DEFAULT;
