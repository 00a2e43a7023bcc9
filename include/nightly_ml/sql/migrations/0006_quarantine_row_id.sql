-- The staging row a quarantined row came from, so a row that broke several rules counts once.
ALTER TABLE ops.quarantine ADD COLUMN IF NOT EXISTS staging_row_id bigint;
