-- How many rows a staging (typed) table holds now: the merge checks it against what was staged and validated.
SELECT count(*) FROM {typed}
