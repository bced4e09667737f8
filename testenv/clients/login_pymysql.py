"""Connect with PyMySQL; print CURRENT_USER() and the session's TLS version,
tab-separated (empty without TLS). Exit 1 with the error on stderr on failure.

    login_pymysql.py --defaults-file=FILE
        everything from FILE's [client] group (PyMySQL's read_default_file:
        host, port, user, password, database, ssl-ca; PyMySQL ignores
        protocol, ssl, skip-ssl and ssl-verify-server-cert)
    login_pymysql.py --host=H --port=P --user=U --password=PW
                       [--database=D] [--ssl-ca=CA | --ssl | --ssl-disabled]
        --ssl-ca: ssl={"ca": CA} (certificate and host name checked);
        --ssl: TLS required, certificate not checked;
        --ssl-disabled: ssl_disabled=True (no TLS); none: PyMySQL's default
        (TLS if the server offers it, unchecked)
"""

import argparse
import sys

import pymysql

PROBE_SQL = (
    "SELECT CURRENT_USER(), (SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS"
    " WHERE VARIABLE_NAME = 'Ssl_version')"
)


def connect_kwargs(a):
    if a.defaults_file:
        return {"read_default_file": a.defaults_file}
    kw = {"host": a.host, "port": a.port, "user": a.user, "password": a.password}
    if a.database:
        kw["database"] = a.database
    if a.ssl_ca:
        kw["ssl"] = {"ca": a.ssl_ca}
    elif a.ssl:
        kw["ssl"] = {"verify_mode": False}
    elif a.ssl_disabled:
        kw["ssl_disabled"] = True
    return kw


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--defaults-file")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--database")
    tls = p.add_mutually_exclusive_group()
    tls.add_argument("--ssl-ca")
    tls.add_argument("--ssl", action="store_true")
    tls.add_argument("--ssl-disabled", action="store_true")
    a = p.parse_args()
    if not a.defaults_file and not (a.host and a.port and a.user and a.password is not None):
        p.error("give --defaults-file, or --host, --port, --user and --password")
    try:
        conn = pymysql.connect(connect_timeout=10, **connect_kwargs(a))
        try:
            with conn.cursor() as cur:
                cur.execute(PROBE_SQL)
                user, tls_version = cur.fetchone()
        finally:
            conn.close()
    except Exception as e:  # report any failure, e.g. pymysql.err.OperationalError
        print("pymysql: %s: %s" % (type(e).__name__, str(e).strip()), file=sys.stderr)
        sys.exit(1)
    print("%s\t%s" % (user, tls_version or ""))


if __name__ == "__main__":
    main()
