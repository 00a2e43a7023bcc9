-- Quarantined rows of one dataset by rule.
SELECT rule, count(*) FROM ops.quarantine WHERE dataset = %(dataset)s GROUP BY rule ORDER BY count(*) DESC;
