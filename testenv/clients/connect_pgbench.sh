#!/bin/sh
# Connect with pgbench (libpq) using only the libpq environment, run one
# transaction that selects current_user, and print it. pgbench's own report
# goes to /dev/null; its errors stay on stderr and it exits 1 on failure.
#
#   connect_pgbench.sh [CONNINFO]     e.g. "service=orders"
#
# The script stores current_user, quoted for sh, with \gset and prints it
# with printf through \shell to file descriptor 3, this script's stdout.
set -eu
script="$(dirname "$0")/connect_pgbench.sql"
exec 3>&1
exec pgbench --no-vacuum --transactions=1 --client=1 --file="$script" "$@" >/dev/null
