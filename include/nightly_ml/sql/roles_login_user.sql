-- A login user in one of the group roles of migration 0010_roles.sql (docs/SECURITY.md); run by a role with
-- CREATEROLE. {group} is nightly_ml_writer or nightly_ml_reader. Its sessions run as the group
-- (SET role), so the tables a writer creates belong to nightly_ml_writer, not to one login.
CREATE ROLE {login} LOGIN PASSWORD %(password)s IN ROLE {group};
ALTER ROLE {login} SET role = {group};
