"""Connect with psycopg 3 (libpq) using only the standard libpq environment
(PGHOST, PGPORT, PGUSER, PGDATABASE, PGSSLMODE, PGPASSFILE) and no password;
print current_user. Exit 1 with the error on stderr on failure."""

import sys

import psycopg


def main():
    try:
        # An empty conninfo makes libpq read everything from the environment.
        with psycopg.connect("") as conn:
            row = conn.execute("select current_user").fetchone()
    except Exception as e:  # report any failure, e.g. psycopg.OperationalError
        print("psycopg: %s: %s" % (type(e).__name__, str(e).strip()), file=sys.stderr)
        sys.exit(1)
    print(row[0])


if __name__ == "__main__":
    main()
