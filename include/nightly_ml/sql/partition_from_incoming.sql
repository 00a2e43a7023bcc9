-- One interval's rows out of a table of incoming rows that holds several, as a partition-to-be.
DROP TABLE IF EXISTS {building};
CREATE TABLE {building} (LIKE {parent} INCLUDING DEFAULTS);
INSERT INTO {building} SELECT * FROM {incoming} WHERE _interval_start = %(start)s;
