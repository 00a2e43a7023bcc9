-- Exact two-sample Kolmogorov-Smirnov statistic, computed where the data lives.
-- Rows are first collapsed to one count per distinct value and sample (so the window
-- functions see distinct values, not rows); the running sums then give both empirical
-- CDFs at every distinct value, ties included, and D is their largest gap.
WITH per_value AS (
    SELECT v,
           count(*) FILTER (WHERE sample = 'reference') AS n_ref,
           count(*) FILTER (WHERE sample = 'current') AS n_cur
    FROM ({reference} UNION ALL {current}) AS s
    WHERE v IS NOT NULL
    GROUP BY v
), cumulative AS (
    SELECT sum(n_ref) OVER running AS cum_ref,
           sum(n_cur) OVER running AS cum_cur,
           sum(n_ref) OVER () AS total_ref,
           sum(n_cur) OVER () AS total_cur
    FROM per_value
    WINDOW running AS (ORDER BY v ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
)
SELECT CAST(max(abs(cum_ref / NULLIF(total_ref, 0) - cum_cur / NULLIF(total_cur, 0))) AS float8) AS statistic,
       CAST(coalesce(max(total_ref), 0) AS bigint) AS n_ref,
       CAST(coalesce(max(total_cur), 0) AS bigint) AS n_cur
FROM cumulative
