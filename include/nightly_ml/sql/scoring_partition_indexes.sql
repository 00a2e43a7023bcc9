-- The indexes of an interval's predictions partition, built in bulk once its rows are in (they match
-- the predictions table's, so attaching adopts them).
ALTER TABLE {building} ADD PRIMARY KEY ({key}, _interval_start);
ANALYZE {building};
