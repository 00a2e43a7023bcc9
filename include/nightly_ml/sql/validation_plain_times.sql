-- The staging rows with their typed values, on the assumption that every event time has a plain shape
-- (typed_tables.TIME_SHAPES): its digits zeroed once (typed_tables.digit_shape), cast once
-- (nightly_ml.etl.typed_tables.plain_typed_select). A naive
-- time is a wall-clock time of the session's zone, valid only if it happens there (not in the hour the
-- clocks skip in spring). _event_kind: NULL without an event time, 0 for one of another shape (the
-- caller then falls back to the careful parse), 1 otherwise. A plain time carries an offset when it ends
-- in Z or in a sign, two characters, a colon and two more (no plain shape ends so otherwise): LIKE reads
-- bytes, where right() and char_length() walk the characters (1M rows: 0.13 s instead of 0.39 s). The volatile
-- _once outputs keep each level a level of its own (validation_typed_table.sql says why).
SELECT p.*,
       CASE WHEN p._parsed IS NULL THEN NULL
            WHEN p.{raw} LIKE '%%Z' OR p.{raw} LIKE '%%+__:__' OR p.{raw} LIKE '%%-__:__' THEN p._parsed
            WHEN p._parsed::timestamp = p.{raw}::timestamp THEN p._parsed
       END AS {value},
       CASE WHEN p.{raw} IS NULL THEN NULL WHEN p._parsed IS NULL THEN 0 ELSE 1 END AS _event_kind,
       clock_timestamp() AS _once_t
FROM (
    SELECT s.*, {others},
           CASE WHEN {shape} = ANY({shapes}::text[]) THEN s.{raw}::timestamptz
           END AS _parsed,
           clock_timestamp() AS _once_p
    FROM {staging} AS s
) AS p
