#!/usr/bin/env bash
# Install Debian's PostgreSQL server for the team-store tests when `initdb` and `pg_ctl` are missing
# (on the PATH or under /usr/lib/postgresql/*/bin). The tests start their own throw-away cluster:
# the package's default cluster is neither needed nor started.
set -euo pipefail
found() {
  command -v "$1" >/dev/null 2>&1 && return 0
  compgen -G "/usr/lib/postgresql/*/bin/$1" >/dev/null
}
if found initdb && found pg_ctl; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure_postgres: initdb/pg_ctl are missing and apt-get is not available; install PostgreSQL" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
found initdb && found pg_ctl
echo "ensure_postgres: installed $(ls -d /usr/lib/postgresql/*/bin | tail -n 1)"
