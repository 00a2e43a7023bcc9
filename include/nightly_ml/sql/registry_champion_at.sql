-- The champion of a model at a moment, from its recorded moves: the newest promote or rollback that had taken
-- effect before the moment. A move decided on an interval's monitoring (a retrain it triggered) takes effect
-- at that interval's end, the data moment it was decided on (so a night replayed later keeps its order); a
-- move without an interval (by hand, a rollback) when it was made. Also says whether any move is recorded.
SELECT (
    SELECT to_version
    FROM ops.promotion_history
    WHERE model_name = %(model_name)s
      AND action IN ('promote', 'rollback')
      AND coalesce(interval_end, decided_at) < %(moment)s
    ORDER BY coalesce(interval_end, decided_at) DESC, id DESC
    LIMIT 1
) AS version,
EXISTS (
    SELECT 1 FROM ops.promotion_history
    WHERE model_name = %(model_name)s AND action IN ('promote', 'rollback')
) AS recorded
