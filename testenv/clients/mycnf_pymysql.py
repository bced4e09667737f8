"""PyMySQL configured by nothing but an option file, as an app reading the
agent's my.cnf would be.

    mycnf_pymysql.py [--file=F] [--group=G] --sql=SQL
        connect with read_default_file=F (default: $RDS_IAM_MYSQL_CNF) and
        read_default_group=G (default "client"), run SQL, print each row
        tab-separated (NULL for None); exit 1 with the error on stderr.
    mycnf_pymysql.py [--file=F] [--group=G] --print
        print what PyMySQL's own parser (pymysql.optionfile.Parser) reads
        from group G, one "--key=value" per line ("--key" without a value),
        keys in file order.
"""

import argparse
import os
import sys

# PyMySQL (with a hint to install it) comes from the connect probe next to
# this file (a script's own directory is on sys.path).
from connect_pymysql import one_line, pymysql
from pymysql.optionfile import Parser


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--file")
    p.add_argument("--group", default="client")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--sql")
    what.add_argument("--print", action="store_true")
    a = p.parse_args()
    path = a.file or os.environ.get("RDS_IAM_MYSQL_CNF")
    if not path:
        p.error("give --file or set RDS_IAM_MYSQL_CNF")
    try:
        if a.print:
            cfg = Parser()
            if not cfg.read(path):
                raise RuntimeError("cannot read %s" % path)
            for key in cfg.options(a.group):
                value = cfg.get(a.group, key)
                print("--%s" % key if value is None else "--%s=%s" % (key, value))
            return
        conn = pymysql.connect(read_default_file=path, read_default_group=a.group,
                               connect_timeout=10)
        try:
            with conn.cursor() as cur:
                cur.execute(a.sql)
                for row in cur.fetchall():
                    print("\t".join("NULL" if v is None else str(v) for v in row))
        finally:
            conn.close()
    except Exception as e:  # report any failure, e.g. pymysql.err.OperationalError
        print("PyMySQL: %s: %s" % (type(e).__name__, one_line(e)), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
