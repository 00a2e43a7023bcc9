-- A temporary table the chunks' scores are COPYed into (dropped at commit).
CREATE TEMPORARY TABLE scored (
    {key} {key_type} PRIMARY KEY,
    prediction double precision NOT NULL,
    predicted_label bigint
) ON COMMIT DROP;
