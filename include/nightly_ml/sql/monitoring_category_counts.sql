-- Rows per category (NULL included, as its own group) of both samples, per interval.
SELECT sample, interval_start, v AS category, count(*) AS n
FROM ({reference} UNION ALL {current}) AS s
GROUP BY sample, interval_start, v
