-- A bigger sort/hash memory for this monitoring pass's transaction only: the labelled pairs' newest-first
-- sort and the grouping sets stay in memory instead of spilling to disk.
SET LOCAL work_mem = '64MB'
