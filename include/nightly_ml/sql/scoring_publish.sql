-- Publish the scores: join them back to their warehouse rows for event time and interval, so that
-- Python only ever handles the key, the features and the score.
INSERT INTO {predictions} ({key}, {event_time}, _interval_start, prediction, predicted_label, model_name, model_version)
SELECT s.{key}, w.{event_time}, w._interval_start, s.prediction, s.predicted_label, %(model_name)s, %(model_version)s
FROM scored AS s
JOIN {warehouse} AS w USING ({key});
