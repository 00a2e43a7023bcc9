-- One writer of a partitioned table's partitions at a time, for the rest of the transaction. Attaching
-- locks the DEFAULT partition exclusively; two writers that had both touched it (reading or deleting
-- the interval's rows there) before attaching would each wait for the other: a deadlock.
SELECT pg_advisory_xact_lock(hashtextextended('nightly_ml.partitions:' || %(parent)s, 0))
