-- The labelled rows of one interval (labels as finally known: this is evaluation, not a decision) that the
-- pipeline scored, with its stored prediction and the naive seasonal baseline's score.
-- Baseline: the mean label (classification: the positive rate) of the row's cell — weekday x hour of the event
-- time in the spec's zone — over the trailing window [as_of - window, as_of), using only labels that had
-- arrived by as_of (the interval's start): a label delivered with its row counts once that row's interval is
-- over, a late label once the interval that delivered it is over. Empty cells fall back to the hour's mean,
-- then to the window's mean; NULL when no label was known at all.
WITH known AS (
    SELECT CAST(CAST(k.{label} AS {label_cast}) AS float8) AS y,
           extract(isodow FROM k.{event_time} AT TIME ZONE %(zone)s) AS dow,
           extract(hour FROM k.{event_time} AT TIME ZONE %(zone)s) AS hour_of_day
    FROM {warehouse} AS k
    WHERE k.{event_time} >= %(window_start)s AND k.{event_time} < %(as_of)s
      AND k.{label} IS NOT NULL
      AND coalesce(k._label_interval_start, k._interval_start) < %(as_of)s
),
cells AS (SELECT dow, hour_of_day, avg(y) AS mean FROM known GROUP BY dow, hour_of_day),
hours AS (SELECT hour_of_day, avg(y) AS mean FROM known GROUP BY hour_of_day),
overall AS (SELECT avg(y) AS mean FROM known)
SELECT {columns},
       CAST(CAST(w.{label} AS {label_cast}) AS float8) AS _label,
       p.prediction AS _pipeline,
       coalesce(c.mean, h.mean, o.mean) AS _baseline
FROM {warehouse} AS w
JOIN {predictions} AS p ON p.{key} = w.{key}
CROSS JOIN overall AS o
LEFT JOIN cells AS c
    ON c.dow = extract(isodow FROM w.{event_time} AT TIME ZONE %(zone)s)
   AND c.hour_of_day = extract(hour FROM w.{event_time} AT TIME ZONE %(zone)s)
LEFT JOIN hours AS h ON h.hour_of_day = extract(hour FROM w.{event_time} AT TIME ZONE %(zone)s)
WHERE w._interval_start = %(interval_start)s
  AND w.{label} IS NOT NULL
ORDER BY w.{event_time}, w.{key}
