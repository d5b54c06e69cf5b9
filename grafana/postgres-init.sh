#!/bin/sh
# Run once by the postgres image when docker-compose.yml first creates the database
# (/docker-entrypoint-initdb.d): a read-only role for Grafana's PostgreSQL datasource,
# allowed to SELECT the tables the tracker creates (job_executions, ...).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v reader_password="${GRAFANA_READER_PASSWORD:?set GRAFANA_READER_PASSWORD}" <<'SQL'
CREATE ROLE grafana_reader LOGIN PASSWORD :'reader_password';
GRANT CONNECT ON DATABASE :"DBNAME" TO grafana_reader;
GRANT USAGE ON SCHEMA public TO grafana_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO grafana_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO grafana_reader;
SQL
