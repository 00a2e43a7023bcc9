INSERT INTO ops.drift_metrics (
    dataset, interval_start, feature, kind, psi, ks_statistic, ks_pvalue, chi2_statistic, chi2_pvalue,
    cramers_v, unseen_share, ref_rows, cur_rows, ref_mean, cur_mean, ref_sd, cur_sd, ref_null_share,
    cur_null_share, drifted, reason, histogram, run_id, psi_threshold, null_pvalue, null_level, null_method,
    tested, mean_tolerance
) VALUES (
    %(dataset)s, %(interval_start)s, %(feature)s, %(kind)s, %(psi)s, %(ks_statistic)s, %(ks_pvalue)s,
    %(chi2_statistic)s, %(chi2_pvalue)s, %(cramers_v)s, %(unseen_share)s, %(ref_rows)s, %(cur_rows)s,
    %(ref_mean)s, %(cur_mean)s, %(ref_sd)s, %(cur_sd)s, %(ref_null_share)s, %(cur_null_share)s, %(drifted)s,
    %(reason)s, CAST(%(histogram)s AS jsonb), %(run_id)s, %(psi_threshold)s, %(null_pvalue)s, %(null_level)s,
    %(null_method)s, %(tested)s, %(mean_tolerance)s
)
