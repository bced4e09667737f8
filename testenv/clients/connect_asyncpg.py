"""Connect with asyncpg, which does not read a spec-correct pgpass
(asyncpg#1249): take the URL (no password) from one env variable and the
password from the token file another names; print current_user. Exit 1 with
the error on stderr on failure.

    connect_asyncpg.py URL_ENV TOKEN_FILE_ENV
    e.g. connect_asyncpg.py RDS_IAM_ORDERS_URL RDS_IAM_ORDERS_TOKEN_FILE
    connect_asyncpg.py
        everything from the libpq environment (PGHOST, PGPORT, PGUSER, ...),
        and the password, if any, from PGPASSFILE as asyncpg reads it: what
        fails with a spec-correct pgpass, and works through the agent's proxy

The token file is read for every connection, so a refreshed token is used.
"""

import asyncio
import os
import sys

import asyncpg


async def main(url_env, token_env):
    if url_env is None:
        conn = await asyncpg.connect()
        try:
            return await conn.fetchval("select current_user")
        finally:
            await conn.close()
    with open(os.environ[token_env], encoding="ascii") as f:
        token = f.read()
    conn = await asyncpg.connect(dsn=os.environ[url_env], password=token)
    try:
        return await conn.fetchval("select current_user")
    finally:
        await conn.close()


if __name__ == "__main__":
    if len(sys.argv) not in (1, 3):
        print("usage: connect_asyncpg.py [URL_ENV TOKEN_FILE_ENV]", file=sys.stderr)
        sys.exit(2)
    args = sys.argv[1:] if len(sys.argv) == 3 else [None, None]
    try:
        user = asyncio.run(main(*args))
    except Exception as e:  # report any failure
        print("asyncpg: %s: %s" % (type(e).__name__, str(e).strip()), file=sys.stderr)
        sys.exit(1)
    print(user)
