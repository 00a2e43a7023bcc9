-- The stored partitions (nightly_ml.etl.key_ranges) whose key range meets the batch's: each range from two
-- probes of the partition's primary key, the batch's from one scan of its staged keys, both in the order of
-- the warehouse key's collation. A partition without rows has no range and meets nothing.
SELECT r.nspname, r.relname
FROM ({ranges}) AS r,
     (SELECT min(s.k) AS lo, max(s.k) AS hi FROM (SELECT {batch_key} AS k FROM {staging}) AS s) AS b
WHERE r.lo <= b.hi AND r.hi >= b.lo
