-- After the plain parse: does any row have an event time it could not read (another shape, or a naive
-- time the zone skips)? Such rows broke a rule, so only the few bad rows are looked up in staging.
SELECT EXISTS (
    SELECT 1
    FROM {typed} AS t
    JOIN {staging} AS s USING (_row_id)
    WHERE t._broken IS NOT NULL AND t.{value} IS NULL AND s.{raw} IS NOT NULL
)
