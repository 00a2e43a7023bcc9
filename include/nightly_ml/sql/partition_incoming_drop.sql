-- A table of incoming rows no longer needed: its intervals were each copied into their own partition, or
-- the run that filled it failed (nightly_ml.modeling.scoring).
DROP TABLE {incoming}
