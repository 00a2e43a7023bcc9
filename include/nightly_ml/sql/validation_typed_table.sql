-- The typed copy of a staging table and its bad rows, from one scan of the staging table: each column
-- cast once into "<column>__value", and every row rule evaluated on the same row. _broken lists the
-- positions of the rules a row breaks ({flags}: one CASE per rule), NULL for a good row. The row facts
-- that need more than the row (a key repeated in the batch, a key already stored under another
-- interval) are joined in first. Nothing but the typed values and _broken is kept: the merge reads the
-- values, the quarantine the raw row from staging.
DROP TABLE IF EXISTS {typed};
CREATE UNLOGGED TABLE {typed} AS
SELECT _row_id, {values},
       CASE WHEN {any_broken} THEN array_remove(ARRAY[{flags}]::smallint[], NULL) END AS _broken
FROM (
    SELECT
        t.*,
        CASE WHEN t.{event_time} IS NULL OR t._event_kind = 0 THEN NULL
             ELSE COALESCE(t.{event_time_value} >= %(start)s AND t.{event_time_value} < %(end)s, false)
        END AS _in_interval,
        EXISTS (
            SELECT 1 FROM {warehouse} AS w
            WHERE w.{key} = t.{key_value} AND w._interval_start <> %(start)s
        ) AS _key_in_other_interval,
        d._key IS NOT NULL AS _duplicate_key
    FROM ({typed_select}) AS t
    LEFT JOIN (
        -- Keys repeated in the batch: first the 64-bit hashes seen twice (grouping a million integers
        -- costs half of grouping a million texts), then the keys behind those few hashes.
        SELECT {key} AS _key FROM {staging}
        WHERE hashtextextended({key}::text, 0) IN (
            SELECT hashtextextended({key}::text, 0) FROM {staging} WHERE {key} IS NOT NULL GROUP BY 1 HAVING count(*) > 1
        )
        GROUP BY {key} HAVING count(*) > 1
    ) AS d ON d._key = t.{key}
    OFFSET 0
) AS f;
ANALYZE {typed};
DROP TABLE IF EXISTS {bad};
CREATE UNLOGGED TABLE {bad} AS SELECT _row_id, _broken FROM {typed} WHERE _broken IS NOT NULL;
ALTER TABLE {bad} ADD PRIMARY KEY (_row_id);
