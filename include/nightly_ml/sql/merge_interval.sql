-- Build an interval's new partition on its own (nothing reads it yet) from the batch's good rows (typed
-- rows that broke no rule): the labels stored on the interval's rows are carried over (a late label
-- survives a re-run that brings none), each row gets its hash, and the indexes are built in bulk once
-- the rows are in (far cheaper than maintaining them row by row). nightly_ml.partitions swaps it in.
DROP TABLE IF EXISTS pg_temp._merge_labels;
CREATE TEMP TABLE _merge_labels ON COMMIT DROP AS
SELECT w.{key} AS _key, w.{label} AS _label, w._label_interval_start AS _label_start
FROM {warehouse} AS w
WHERE w._interval_start = %(start)s AND (w.{label} IS NOT NULL OR w._label_interval_start IS NOT NULL);
-- Without statistics the planner guesses a big table and sorts the whole batch for a merge join.
ANALYZE pg_temp._merge_labels;
DROP TABLE IF EXISTS {building};
-- CREATE TABLE AS, not an INSERT into a copy of the parent: the rows are written through a bulk-insert ring
-- instead of the shared buffers (for 1M rows 0.9-1.1 s instead of 1.9 s). The select list gives every
-- column of the parent, in its order, with its type (nightly_ml.etl.warehouse.partition_columns); ATTACH
-- PARTITION checks that they match. Parallel workers read the batch and hash its rows (the subquery) while
-- the leader writes: the planner's default cost of handing a row to the leader (0.1) rates that plan
-- dearer than reading alone, which took longer on two cores (1M rows: 2.2-3.0 s alone, 1.3-2.0 s with
-- the workers), so the cost is lowered for this statement.
SET LOCAL parallel_tuple_cost = 0.001;
CREATE TABLE {building} AS
SELECT {columns}
FROM (
    SELECT v.*, lpad(to_hex(hash_record_extended(ROW({hash_values}), 0)), 16, '0') AS _row_hash
    FROM {typed} AS v
    WHERE v._broken IS NULL
    OFFSET 0
) AS v
LEFT JOIN _merge_labels AS k ON k._key = v.{key_value};
RESET parallel_tuple_cost;
-- One scan checks the NOT NULL columns and the interval's bound (the CHECK nightly_ml.partitions drops once
-- the table is attached): with the bound proven, attaching it skips a scan of its own.
ALTER TABLE {building} {not_null}, ADD CONSTRAINT {bound_check} CHECK (_interval_start = %(start)s);
ALTER TABLE {building} ADD PRIMARY KEY ({key}, _interval_start);
CREATE INDEX ON {building} ({event_time});
-- Statistics of the columns the night's later statements filter and join on (the key, the interval, the
-- event time, the label and when it came) when autovacuum runs: it analyzes the partition soon after,
-- because an ANALYZE of some columns leaves the table's count of changed rows as it was (1M rows: 0.11 s
-- instead of 0.21 s). Without autovacuum, of every column (nightly_ml.etl.warehouse.analyzed_columns).
ANALYZE {building}{analyzed};
-- Rows merged and their checksum (the interval's, once swapped in: a count and the XOR of the rows' 64-bit
-- hashes, so no sort and equal for equal rows whatever order a load wrote them in; late labels leave the
-- hashes as loaded); the interval's stored rows whose key the batch no longer has; keys of the batch stored
-- under another interval since validation quarantined those (a concurrent run of another interval), looked
-- up only in the partitions validation did not see (merge_unseen_partitions.sql); the batch's bad rows, so
-- that the caller knows that the typed table still held every row staged (a crash empties it).
SELECT b.rows, b.checksum,
       (SELECT count(*) FROM {warehouse} AS w
        WHERE w._interval_start = %(start)s
          AND NOT EXISTS (SELECT 1 FROM {building} AS n WHERE n.{key} = w.{key})),
       ARRAY(SELECT n.{key}::text FROM {building} AS n
             WHERE EXISTS (SELECT 1 FROM {stored_since_validation} AS w
                           WHERE w.{key} = n.{key} AND w._interval_start <> %(start)s{key_lookback})
             ORDER BY 1 LIMIT 5),
       (SELECT count(*) FROM {bad})
FROM (SELECT count(*) AS rows,
             md5(count(*)::text || ':' || coalesce(bit_xor(('x' || _row_hash)::bit(64)::bigint)::text, '')) AS checksum
      FROM {building}) AS b;
