-- The chunks' predictions, straight into the predictions table (the interval's earlier ones were
-- cleared first, in the same transaction).
COPY {predictions} ({columns}) FROM STDIN WITH (FORMAT csv)
