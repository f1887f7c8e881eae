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
bash "$(dirname "$0")/apt_install.sh" ensure_postgres postgresql
found initdb && found pg_ctl
echo "ensure_postgres: installed $(ls -d /usr/lib/postgresql/*/bin | tail -n 1)"
