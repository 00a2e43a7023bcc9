-- The chunks' predictions, straight into the table that becomes their interval's partition.
COPY {incoming} ({columns}) FROM STDIN WITH (FORMAT csv)
