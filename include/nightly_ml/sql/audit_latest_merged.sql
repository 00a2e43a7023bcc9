-- End of the newest interval merged into the warehouse for a dataset.
SELECT max(interval_end) FROM ops.load_audit WHERE dataset = %(dataset)s AND status = 'merged';
