-- The point-in-time training frame of the fixed-cadence policy: labelled rows with event time in the window
-- [window_start, window_end) whose label had arrived by window_end (the retrain moment). Unlike
-- training_frame.sql (the pipeline's, run on the night itself) a backtest runs after every label arrived, so
-- the labels delivered later must be left out explicitly. Ordered by time, then key: same data, same model.
SELECT {columns}
FROM {warehouse}
WHERE {event_time} >= %(window_start)s
  AND {event_time} < %(window_end)s
  AND {label} IS NOT NULL
  AND coalesce(_label_interval_start, _interval_start) < %(window_end)s
ORDER BY {event_time}, {key}
