-- An interval's partition leaves its table (a re-run replaces it, or the interval is removed).
-- Detaching waits for the queries reading the table and holds new ones until the transaction ends.
ALTER TABLE {parent} DETACH PARTITION {partition};
DROP TABLE {partition};
