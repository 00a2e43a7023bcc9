-- The latest promote or rollback of one model: its from_version is what "rollback to previous" restores.
SELECT from_version, to_version, action, decided_at
FROM ops.promotion_history
WHERE model_name = %(model_name)s
  AND action IN ('promote', 'rollback')
ORDER BY id DESC
LIMIT 1
