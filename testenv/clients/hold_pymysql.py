"""Keep one PyMySQL session open and busy, from the probes' MySQL environment
(README.md: MYSQL_UNIX_PORT or MYSQL_HOST/MYSQL_TCP_PORT, MYSQL_USER,
MYSQL_DATABASE, MYSQL_PWD).

    hold_pymysql.py --seconds=N

Runs "select connection_id()" once a second for N seconds on one
connection and checks the id never changes; prints
"queries=<Q> connection_id=<I>" and exits 0, or exits 1 with the first
error on stderr.
"""

import argparse
import sys
import time

# The probes' environment and PyMySQL come from the connect probe next to
# this file (a script's own directory is on sys.path).
from connect_pymysql import connect_args, one_line, pymysql


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, required=True)
    a = p.parse_args()
    queries = 0
    try:
        conn = pymysql.connect(**connect_args(False), read_timeout=30)
        start = time.monotonic()
        first = None
        while True:
            with conn.cursor() as cur:
                cur.execute("select connection_id()")
                cid = cur.fetchone()[0]
            queries += 1
            if first is None:
                first = cid
            elif cid != first:
                raise RuntimeError("connection id changed from %s to %s" % (first, cid))
            if time.monotonic() - start >= a.seconds:
                break
            time.sleep(1)
        conn.close()
    except Exception as e:  # report any failure, e.g. pymysql.err.OperationalError
        print("PyMySQL after %d queries: %s: %s" % (queries, type(e).__name__, one_line(e)),
              file=sys.stderr)
        sys.exit(1)
    print("queries=%d connection_id=%s" % (queries, first))


if __name__ == "__main__":
    main()
