-- The intervals a table of incoming rows holds, each to become a partition.
SELECT DISTINCT _interval_start FROM {incoming} ORDER BY 1
