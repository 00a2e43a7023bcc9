-- Least privilege (docs/SECURITY.md): two NOLOGIN group roles; login users are made members of one of them.
--   nightly_ml_writer  what the pipeline needs: use the schemas, create its per-dataset and staging tables,
--                      read and write rows, use sequences. Not: create roles or schemas, drop a schema,
--                      touch the ops tables' structure.
--   nightly_ml_reader  SELECT on the warehouse (rows and predictions) and ops tables, now and in future.
-- A writer login user must run as the group (ALTER ROLE <login> SET role = 'nightly_ml_writer'), so the
-- tables it creates belong to the group: every writer login can then extend them, and the default
-- privileges below make them readable by the reader role.
-- Roles are cluster-wide: created only when missing, and a concurrent creation from another database
-- is no error. The user running the migrations (the database owner) needs CREATEROLE once, or a superuser
-- creates the two roles beforehand and grants them to it (docker/postgres-init.sh does).
DO $$
DECLARE
    group_role text;
BEGIN
    FOREACH group_role IN ARRAY ARRAY['nightly_ml_writer', 'nightly_ml_reader'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = group_role) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', group_role);
            EXCEPTION
                WHEN duplicate_object OR unique_violation THEN
                    NULL;
                WHEN insufficient_privilege THEN
                    RAISE EXCEPTION 'role % does not exist and % may not create roles', group_role, current_user
                        USING HINT = 'create it as a superuser first: docs/SECURITY.md, "Setting up an existing server"';
            END;
        END IF;
    END LOOP;
    -- ALTER DEFAULT PRIVILEGES FOR ROLE and ALTER TABLE OWNER TO below need membership of the writer role.
    IF NOT (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user)
       AND NOT pg_catalog.pg_has_role(current_user, 'nightly_ml_writer', 'MEMBER') THEN
        EXECUTE format('GRANT nightly_ml_writer TO %I', current_user);
    END IF;
    -- Connecting (PUBLIC may have lost it: docker/postgres-init.sh revokes it) and temporary tables (scoring).
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO nightly_ml_writer', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO nightly_ml_reader', current_database());
END
$$;

-- Schemas: both may look; only the writer creates tables, and only in warehouse and staging.
GRANT USAGE ON SCHEMA warehouse, staging, ops TO nightly_ml_writer;
GRANT CREATE ON SCHEMA warehouse, staging TO nightly_ml_writer;
GRANT USAGE ON SCHEMA warehouse, ops TO nightly_ml_reader;

-- Existing tables and sequences.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA warehouse, staging, ops TO nightly_ml_writer;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA warehouse, staging, ops TO nightly_ml_writer;
GRANT SELECT ON ALL TABLES IN SCHEMA warehouse, ops TO nightly_ml_reader;

-- Future tables created by whoever runs the migrations (ops tables of later migrations).
ALTER DEFAULT PRIVILEGES IN SCHEMA warehouse, staging, ops
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO nightly_ml_writer;
ALTER DEFAULT PRIVILEGES IN SCHEMA warehouse, staging, ops
    GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO nightly_ml_writer;
ALTER DEFAULT PRIVILEGES IN SCHEMA warehouse, ops GRANT SELECT ON TABLES TO nightly_ml_reader;
-- Future tables created by the writer (a new dataset's warehouse and predictions tables).
ALTER DEFAULT PRIVILEGES FOR ROLE nightly_ml_writer IN SCHEMA warehouse GRANT SELECT ON TABLES TO nightly_ml_reader;

-- The per-dataset tables that exist already go to the writer: the ingest adds a spec's new columns and
-- indexes to them (nightly_ml.db.ensure_dataset_tables), which PostgreSQL allows their owner only.
DO $$
DECLARE
    owned record;
BEGIN
    FOR owned IN
        SELECT c.oid::regclass AS relation
        FROM pg_catalog.pg_class AS c
        JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname IN ('warehouse', 'staging') AND c.relkind IN ('r', 'p')
          AND pg_catalog.pg_get_userbyid(c.relowner) = current_user
    LOOP
        EXECUTE format('ALTER TABLE %s OWNER TO nightly_ml_writer', owned.relation);
    END LOOP;
END
$$;
