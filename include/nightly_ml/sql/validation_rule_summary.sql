-- One row for Great Expectations: per row rule, how many rows broke it ({counts}, from the bad rows
-- only); per soft rule, the batch aggregate it bounds ({aggregates}: one scan of the typed table, or a
-- row of no columns).
DROP TABLE IF EXISTS {summary};
CREATE UNLOGGED TABLE {summary} AS
SELECT c.*, a.*
FROM (SELECT {counts} FROM {bad}) AS c
CROSS JOIN ({aggregates}) AS a;
