#!/bin/sh
# Connect with the mariadb CLI (Debian mariadb-client) from the probes' MySQL
# environment (README.md): MYSQL_UNIX_PORT, or MYSQL_HOST (default 127.0.0.1)
# and MYSQL_TCP_PORT (default 3306); MYSQL_USER; MYSQL_DATABASE if set. The
# CLI reads MYSQL_PWD itself. Option files are ignored (--no-defaults), so the
# machine's /etc/mysql cannot change where it connects. Prints current_user();
# exits 1 with the error on stderr.
set -eu
fail() { echo "mariadb CLI probe: $*" >&2; exit 1; }
[ -n "${MYSQL_USER:-}" ] || fail "MYSQL_USER is not set"
if [ -n "${MYSQL_UNIX_PORT:-}" ]; then
  [ -z "${MYSQL_HOST:-}" ] || fail "both MYSQL_UNIX_PORT and MYSQL_HOST are set: set one"
  set -- --protocol=socket --socket="$MYSQL_UNIX_PORT"
else
  set -- --protocol=tcp --host="${MYSQL_HOST:-127.0.0.1}" --port="${MYSQL_TCP_PORT:-3306}"
fi
if [ -n "${MYSQL_DATABASE:-}" ]; then
  set -- "$@" --database="$MYSQL_DATABASE"
fi
exec mariadb --no-defaults "$@" --user="$MYSQL_USER" --connect-timeout=30 \
  --batch --skip-column-names --execute='select current_user()'
