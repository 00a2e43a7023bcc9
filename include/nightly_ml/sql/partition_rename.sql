-- A table of incoming rows that holds one interval becomes that interval's partition-to-be.
ALTER TABLE {table} RENAME TO {name};
