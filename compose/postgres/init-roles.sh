#!/bin/sh
# PostgreSQL's first start (docker-entrypoint-initdb.d; skipped once the data volume holds
# a cluster): the roles and databases of the stack. Passwords come from compose/.env.
#
#   loanfolio_owner  owns the `loanfolio` database and schema; `loanfolio migrate` logs in
#                    as it (docs/architecture.md: migrations run as the schema owner)
#   loanfolio_app    the runtime role the migrations grant to (read/write, audit log
#                    INSERT + SELECT only); created here so the owner needs no CREATEROLE
#   loanfolio        the login of `serve`, `worker` and `admin`: a member of loanfolio_app
#   keycloak         owns the `keycloak` database (Keycloak's own storage)
#
# Executable on purpose: the image runs executable *.sh files and sources the others.
set -e

: "${POSTGRES_OWNER_PASSWORD:?}" "${POSTGRES_APP_PASSWORD:?}" "${KEYCLOAK_DB_PASSWORD:?}"

# psql variables (:'name') quote the passwords as SQL literals.
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v owner_password="$POSTGRES_OWNER_PASSWORD" \
    -v app_password="$POSTGRES_APP_PASSWORD" \
    -v keycloak_password="$KEYCLOAK_DB_PASSWORD" <<'SQL'
create role loanfolio_owner login password :'owner_password';
create role loanfolio_app nologin;
create role loanfolio login password :'app_password' in role loanfolio_app;
create database loanfolio owner loanfolio_owner;
revoke all on database loanfolio from public;
grant connect, temporary on database loanfolio to loanfolio;

create role keycloak login password :'keycloak_password';
create database keycloak owner keycloak;
revoke all on database keycloak from public;
SQL
