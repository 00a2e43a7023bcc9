-- The staging rows with their typed values, on the assumption that every event time has a plain shape
-- (typed_tables.TIME_SHAPES): translated once, cast once (nightly_ml.etl.typed_tables.plain_typed_select). A naive
-- time is a wall-clock time of the session's zone, valid only if it happens there (not in the hour the
-- clocks skip in spring). _event_kind: NULL without an event time, 0 for one of another shape (the
-- caller then falls back to the careful parse), 1 otherwise. Each OFFSET 0 computes a value once for
-- its uses above it.
SELECT p.*,
       CASE WHEN p._parsed IS NULL THEN NULL
            WHEN right(p._shape, 1) = 'Z' OR right(p._shape, 6) IN ('+00:00', '-00:00') THEN p._parsed
            WHEN p._parsed::timestamp = p.{raw}::timestamp THEN p._parsed
       END AS {value},
       CASE WHEN p.{raw} IS NULL THEN NULL WHEN p._parsed IS NULL THEN 0 ELSE 1 END AS _event_kind
FROM (
    SELECT h.*, CASE WHEN h._shape = ANY({shapes}::text[]) THEN h.{raw}::timestamptz END AS _parsed
    FROM (
        SELECT s.*, {others}, translate(s.{raw}, '0123456789', '0000000000') AS _shape
        FROM {staging} AS s
        OFFSET 0
    ) AS h
    OFFSET 0
) AS p
