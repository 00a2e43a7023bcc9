-- Size, mean and sd of both samples, and the reference quantiles that fix the bin edges.
-- The FILTER keeps the current sample out of the (sorting) quantile aggregate.
SELECT sample,
       count(*) AS rows,
       count(v) AS non_null,
       avg(v) AS mean,
       stddev_samp(v) AS sd,
       {percentile}(CAST(%(quantiles)s AS float8[])) WITHIN GROUP (ORDER BY v)
           FILTER (WHERE sample = 'reference') AS quantiles
FROM ({reference} UNION ALL {current}) AS s
GROUP BY sample
