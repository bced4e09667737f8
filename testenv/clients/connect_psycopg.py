"""Connect with psycopg 3 (libpq) using only the standard libpq environment
(PGHOST, PGPORT, PGUSER, PGDATABASE, PGSSLMODE, PGPASSFILE, PGSERVICEFILE) and
no password; print current_user. Exit 1 with the error on stderr on failure.

    connect_psycopg.py [CONNINFO]     e.g. "service=orders"
"""

import sys

import psycopg


def main():
    try:
        # An empty conninfo makes libpq read everything from the environment.
        conninfo = sys.argv[1] if len(sys.argv) > 1 else ""
        with psycopg.connect(conninfo) as conn:
            row = conn.execute("select current_user").fetchone()
    except Exception as e:  # report any failure, e.g. psycopg.OperationalError
        print("psycopg: %s: %s" % (type(e).__name__, str(e).strip()), file=sys.stderr)
        sys.exit(1)
    print(row[0])


if __name__ == "__main__":
    main()
