-- An interval's predictions partition, once its rows are in: statistics for the readers' plans. (No index:
-- the partition holds one interval, and the listing of scored intervals starts from the partitions' bounds.)
ANALYZE {building};
