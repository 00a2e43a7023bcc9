-- Counts per reference bin of both samples: width_bucket puts values below the first
-- edge in bin 0 and values at or above the last edge in bin len(edges).
SELECT sample, width_bucket(v, CAST(%(edges)s AS float8[])) AS bin, count(*) AS n
FROM ({reference} UNION ALL {current}) AS s
WHERE v IS NOT NULL
GROUP BY sample, bin
