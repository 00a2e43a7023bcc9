-- Row count and a checksum of one interval's rows that does not depend on their order (the XOR of the
-- rows' 64-bit hashes, so no sort): equal for equal rows, whatever order a load wrote them in.
SELECT count(*), md5(count(*)::text || ':' || coalesce(bit_xor(('x' || _row_hash)::bit(64)::bigint)::text, ''))
FROM {warehouse}
WHERE _interval_start = %(start)s;
