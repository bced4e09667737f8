"""Connect with psycopg 3 (libpq) using only the standard libpq environment
(PGHOST, PGPORT, PGUSER, PGDATABASE, PGSSLMODE, PGPASSFILE, PGSERVICEFILE) and
no password; print current_user. Exit 1 with the error on stderr on failure.

    connect_psycopg.py [CONNINFO]     e.g. "service=orders"
    connect_psycopg.py --cancel-after-ms N [--cancel-safe] [CONNINFO]

With --cancel-after-ms, run "select pg_sleep(30)" and cancel it from another
thread after N ms with conn.cancel() (libpq's PQcancel: a plain CancelRequest
on a new connection), or with --cancel-safe conn.cancel_safe() (libpq >= 17's
PQcancelCreate, which encrypts the cancel connection like the session's). Print
"elapsed_ms=<N> code=<SQLSTATE> error=<message>" (57014 when cancelled); exit 1
if the query was not cancelled.
"""

import argparse
import sys
import threading
import time

import psycopg


def current_user(conninfo):
    with psycopg.connect(conninfo) as conn:
        return conn.execute("select current_user").fetchone()[0]


def one_line(text):
    return " ".join(str(text).split())


def cancel_sleep(conninfo, after_ms, safe):
    with psycopg.connect(conninfo, autocommit=True) as conn:
        cancel_errors = []

        def cancel():
            try:
                conn.cancel_safe() if safe else conn.cancel()
            except Exception as e:  # reported below with the query's outcome
                cancel_errors.append(e)

        timer = threading.Timer(after_ms / 1000.0, cancel)
        start = time.monotonic()
        timer.start()
        try:
            conn.execute("select pg_sleep(30)")
        except psycopg.Error as e:
            elapsed_ms = int((time.monotonic() - start) * 1000)
            return "elapsed_ms=%d code=%s error=%s" % (elapsed_ms, e.sqlstate or "-", one_line(e))
        finally:
            timer.cancel()
            timer.join()
        raise RuntimeError(
            "pg_sleep(30) finished: the query was not cancelled%s"
            % ("".join(" (cancel failed: %s)" % one_line(e) for e in cancel_errors))
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("conninfo", nargs="?", default="")
    parser.add_argument("--cancel-after-ms", type=int)
    parser.add_argument("--cancel-safe", action="store_true")
    args = parser.parse_args()
    try:
        # An empty conninfo makes libpq read everything from the environment.
        if args.cancel_after_ms:
            line = cancel_sleep(args.conninfo, args.cancel_after_ms, args.cancel_safe)
        else:
            line = current_user(args.conninfo)
    except Exception as e:  # report any failure, e.g. psycopg.OperationalError
        print("psycopg: %s: %s" % (type(e).__name__, str(e).strip()), file=sys.stderr)
        sys.exit(1)
    print(line)


if __name__ == "__main__":
    main()
