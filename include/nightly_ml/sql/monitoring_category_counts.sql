-- Rows per category (NULL included, as its own group) of both samples.
SELECT sample, v AS category, count(*) AS n
FROM ({reference} UNION ALL {current}) AS s
GROUP BY sample, v
