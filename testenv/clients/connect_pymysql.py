"""Connect with PyMySQL, run "select current_user()" and print it. Exit 1 with
the error on stderr on failure.

    connect_pymysql.py [--option-file] [--kill-after-ms N]

The connection comes from the probes' MySQL environment (see README.md):
MYSQL_UNIX_PORT, or MYSQL_HOST (default 127.0.0.1) and MYSQL_TCP_PORT (default
3306); MYSQL_USER; MYSQL_DATABASE and MYSQL_PWD if set. With --option-file it
comes from an option file only, as an application configured that way would:
read_default_file=$MYSQL_OPTION_FILE, read_default_group=$MYSQL_OPTION_GROUP
(default "client"); PyMySQL reads the file at every connect, so a rewritten
password is used by the next connection.

With --kill-after-ms, run "select sleep(30)" and, from a second connection
after N ms, "KILL QUERY <the first connection's id>". Print
"elapsed_ms=<N> code=<MySQL error number> error=<message>" (1317 when
interrupted); exit 1 if the query was not interrupted.
"""

import argparse
import os
import sys
import threading
import time

try:
    import pymysql
except ImportError as e:
    print("PyMySQL: %s; run testenv/setup.sh (as root) to install the test dependencies" % e,
          file=sys.stderr)
    sys.exit(1)


def connect_args(option_file):
    if option_file:
        path = os.environ.get("MYSQL_OPTION_FILE")
        if not path:
            raise RuntimeError("--option-file needs MYSQL_OPTION_FILE")
        group = os.environ.get("MYSQL_OPTION_GROUP") or "client"
        return {"read_default_file": path, "read_default_group": group}
    env = os.environ
    user = env.get("MYSQL_USER")
    if not user:
        raise RuntimeError("MYSQL_USER is not set")
    args = {"user": user, "connect_timeout": 30}
    if env.get("MYSQL_UNIX_PORT"):
        if env.get("MYSQL_HOST"):
            raise RuntimeError("both MYSQL_UNIX_PORT and MYSQL_HOST are set: set one")
        args["unix_socket"] = env["MYSQL_UNIX_PORT"]
    else:
        args["host"] = env.get("MYSQL_HOST") or "127.0.0.1"
        args["port"] = int(env.get("MYSQL_TCP_PORT") or "3306")
    if env.get("MYSQL_DATABASE"):
        args["database"] = env["MYSQL_DATABASE"]
    if env.get("MYSQL_PWD"):
        args["password"] = env["MYSQL_PWD"]
    return args


def one_line(text):
    return " ".join(str(text).split())


def current_user(args):
    conn = pymysql.connect(**args)
    try:
        with conn.cursor() as cur:
            cur.execute("select current_user()")
            return cur.fetchone()[0]
    finally:
        conn.close()


def kill_sleep(args, after_ms):
    conn = pymysql.connect(**args)
    killer = pymysql.connect(**args)
    try:
        conn_id = conn.thread_id()
        kill_errors = []

        def kill():
            try:
                with killer.cursor() as cur:
                    cur.execute("KILL QUERY %d" % conn_id)
            except Exception as e:  # reported below with the query's outcome
                kill_errors.append(e)

        timer = threading.Timer(after_ms / 1000.0, kill)
        start = time.monotonic()
        timer.start()
        try:
            with conn.cursor() as cur:
                cur.execute("select sleep(30)")
                result = cur.fetchone()
        except pymysql.MySQLError as e:
            elapsed_ms = int((time.monotonic() - start) * 1000)
            code = e.args[0] if e.args else "-"
            return "elapsed_ms=%d code=%s error=%s" % (elapsed_ms, code, one_line(e))
        finally:
            timer.cancel()
            timer.join()
        raise RuntimeError(
            "select sleep(30) returned %r: the query was not interrupted%s"
            % (result, "".join(" (KILL QUERY failed: %s)" % one_line(e) for e in kill_errors))
        )
    finally:
        killer.close()
        conn.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--option-file", action="store_true")
    parser.add_argument("--kill-after-ms", type=int)
    args = parser.parse_args()
    try:
        conn_args = connect_args(args.option_file)
        if args.kill_after_ms:
            line = kill_sleep(conn_args, args.kill_after_ms)
        else:
            line = current_user(conn_args)
    except Exception as e:  # report any failure, e.g. pymysql.err.OperationalError
        print("PyMySQL: %s: %s" % (type(e).__name__, one_line(e)), file=sys.stderr)
        sys.exit(1)
    print(line)


if __name__ == "__main__":
    main()
