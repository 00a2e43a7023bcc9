-- Cache one feature's reference profile for a champion version (a recomputation replaces it).
INSERT INTO ops.reference_profile
    (model_name, model_version, feature, dataset, reference_start, reference_end, reference_rows, profile)
VALUES (%(model_name)s, %(model_version)s, %(feature)s, %(dataset)s, %(ref_start)s, %(ref_end)s,
        %(reference_rows)s, %(profile)s)
ON CONFLICT (model_name, model_version, feature) DO UPDATE SET
    dataset = EXCLUDED.dataset, reference_start = EXCLUDED.reference_start,
    reference_end = EXCLUDED.reference_end, reference_rows = EXCLUDED.reference_rows,
    profile = EXCLUDED.profile, computed_at = now()
