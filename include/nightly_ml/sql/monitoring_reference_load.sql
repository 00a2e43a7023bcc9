-- The cached reference profiles of one champion version and reference window.
SELECT feature, reference_rows, profile
FROM ops.reference_profile
WHERE model_name = %(model_name)s
  AND model_version = %(model_version)s
  AND reference_start = %(ref_start)s
  AND reference_end = %(ref_end)s
