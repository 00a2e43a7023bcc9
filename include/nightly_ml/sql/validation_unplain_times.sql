-- After the plain parse: does any row have an event time it could not read (another shape, or a naive
-- time the zone skips)? Such rows broke a rule, so only the bad rows are looked up, and a batch without any
-- reads nothing more (the first EXISTS is false, and the second is then never run).
SELECT EXISTS (SELECT 1 FROM {bad}) AND EXISTS (
    SELECT 1
    FROM {bad} AS b
    JOIN {typed} AS t USING (_row_id)
    JOIN {staging} AS s USING (_row_id)
    WHERE t.{value} IS NULL AND s.{raw} IS NOT NULL
)
