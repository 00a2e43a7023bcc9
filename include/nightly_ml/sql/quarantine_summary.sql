-- Quarantined rows of one interval, by rule.
SELECT rule, count(*) FROM ops.quarantine
WHERE dataset = %(dataset)s AND interval_start = %(start)s
GROUP BY rule ORDER BY count(*) DESC, rule;
