-- A raw line that could not even be loaded (malformed, or bytes that are not UTF-8).
INSERT INTO ops.quarantine (dataset, interval_start, interval_end, run_id, source_file, line_number, rule, detail, raw_line)
VALUES (%(dataset)s, %(start)s, %(end)s, %(run_id)s, %(source_file)s, %(line_number)s, %(rule)s, %(detail)s, %(raw_line)s);
