#!/bin/sh
# First start of the registry database (docker-entrypoint-initdb.d): a read-only role for Grafana's
# `nakhon-registry` datasource (device positions and sites for the map panels). The registry's tables are
# created later by the services' Alembic migrations, hence the default privileges.
set -eu
: "${GRAFANA_DB_PASSWORD:?}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
CREATE ROLE grafana_reader LOGIN PASSWORD '${GRAFANA_DB_PASSWORD}';
GRANT CONNECT ON DATABASE "${POSTGRES_DB}" TO grafana_reader;
GRANT USAGE ON SCHEMA public TO grafana_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE "${POSTGRES_USER}" IN SCHEMA public GRANT SELECT ON TABLES TO grafana_reader;
SQL
