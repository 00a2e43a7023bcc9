-- An interval's partition leaves the warehouse (a re-run replaces it, or the interval is removed).
-- Detaching waits for the queries reading the warehouse and holds new ones until the transaction ends.
ALTER TABLE {warehouse} DETACH PARTITION {final};
DROP TABLE {final};
