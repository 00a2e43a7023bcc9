-- A table of incoming rows whose intervals were each copied into their own partition.
DROP TABLE {incoming}
