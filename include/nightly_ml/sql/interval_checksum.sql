-- Row count and an order-independent-of-load checksum of one interval's rows.
SELECT count(*), md5(string_agg(_row_hash, '' ORDER BY {key}))
FROM {warehouse}
WHERE _interval_start = %(start)s;
