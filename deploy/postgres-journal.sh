#!/usr/bin/env bash
# The scheduler's shared journal on PostgreSQL 15 (Debian's postgresql package): starts the cluster 15/main, creates
# (or keeps) a role and a database, and prints the HOCON every scheduler-role node needs, so that the singleton finds
# the same journal on whichever node it runs.
#   deploy/postgres-journal.sh [role] [password] [database] [listen-host]
# Run as root on the database host. Nodes elsewhere also need that host in listen_addresses and pg_hba.conf.
set -euo pipefail
role=${1:-vmscatter}; password=${2:-vmscatter}; database=${3:-vmscatter}; host=${4:-127.0.0.1}
command -v pg_ctlcluster >/dev/null || { echo "error: PostgreSQL is not installed: apt-get install postgresql" >&2; exit 1; }
[[ "$role$database" =~ ^[a-z_][a-z0-9_]*$ ]] || { echo "error: role and database must be lower-case identifiers" >&2; exit 2; }
pg_lsclusters -h | awk '$1 == 15 && $2 == "main"' | grep -q . || pg_createcluster 15 main >/dev/null
pg_lsclusters -h | awk '$1 == 15 && $2 == "main" && $4 == "online"' | grep -q . || pg_ctlcluster 15 main start
psql_() { su postgres -c "psql -qtAX -v ON_ERROR_STOP=1 $*"; }
for _ in $(seq 1 30); do psql_ "-c 'select 1'" >/dev/null 2>&1 && break; sleep 1; done
if [[ -z $(psql_ "-c \"select 1 from pg_roles where rolname = '$role'\"") ]]; then
  psql_ "-c \"create role $role login password '$password'\""
fi
if [[ -z $(psql_ "-c \"select 1 from pg_database where datname = '$database'\"") ]]; then
  psql_ "-c \"create database $database owner $role\""
fi
cat <<HOCON
vmscatter.persistence {
  provider-name = "PostgreSQL.15"
  connection-string = "Host=$host;Port=5432;Username=$role;Password=$password;Database=$database"
}
HOCON
