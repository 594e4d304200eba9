#!/usr/bin/env bash
# Makes sure a PostgreSQL server from Debian's packages is running on 127.0.0.1:5432 and that
# the test role and database exist. Tests read the connection string from OLOCUS_TEST_PG_URL
# (default postgres://olocus_test@127.0.0.1:5432/olocus_test, trust auth on loopback for that
# role only — a throwaway test database, never a production setting).
set -euo pipefail
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
if ! command -v pg_lsclusters >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
cluster=$(pg_lsclusters --no-header | awk 'NR==1 {print $1" "$2}')
if [ -z "$cluster" ]; then
  version=$(ls /usr/lib/postgresql | sort -V | tail -1)
  $SUDO pg_createcluster "$version" main >/dev/null
  cluster="$version main"
fi
read -r version name <<<"$cluster"
hba="/etc/postgresql/$version/$name/pg_hba.conf"
if ! $SUDO grep -q 'olocus_test' "$hba"; then
  # first match wins in pg_hba.conf: put the test role's line on top
  $SUDO sed -i '1i host olocus_test olocus_test 127.0.0.1/32 trust' "$hba"
  $SUDO pg_ctlcluster "$version" "$name" reload 2>/dev/null || true
fi
if ! pg_lsclusters --no-header | awk -v v="$version" -v n="$name" '$1==v && $2==n {print $4}' | grep -q online; then
  $SUDO pg_ctlcluster "$version" "$name" start
fi
for _ in $(seq 1 30); do
  if su postgres -c "psql -qtAc 'select 1'" >/dev/null 2>&1; then break; fi
  sleep 1
done
su postgres -c "psql -qtAc \"select 1 from pg_roles where rolname='olocus_test'\"" | grep -q 1 ||
  su postgres -c "psql -qc 'create role olocus_test login createdb'"
su postgres -c "psql -qtAc \"select 1 from pg_database where datname='olocus_test'\"" | grep -q 1 ||
  su postgres -c "psql -qc 'create database olocus_test owner olocus_test'"
echo "postgres: ready on 127.0.0.1:5432 (database olocus_test)" >&2
