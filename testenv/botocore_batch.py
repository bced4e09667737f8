#!/usr/bin/env python3
"""botocore's generate_db_auth_token for many cases at once (the reference
for the agent's differential test).

stdin: a JSON array of {host, port, user, region, akid, secret,
session_token (or null), time (unix seconds)}; stdout: a JSON array of tokens
in the same order. Run with the project's venv.
"""

import datetime
import json
import sys

import botocore.auth
import botocore.session


def main():
    cases = json.load(sys.stdin)
    if not hasattr(botocore.auth, "get_current_datetime"):
        sys.exit("botocore_batch.py: botocore.auth.get_current_datetime is missing; cannot pin the clock")
    session = botocore.session.Session()
    out = []
    for c in cases:
        fixed = datetime.datetime.fromtimestamp(c["time"], tz=datetime.timezone.utc)
        botocore.auth.get_current_datetime = (
            lambda remove_tzinfo=True, fixed=fixed: fixed.replace(tzinfo=None) if remove_tzinfo else fixed
        )
        client = session.create_client(
            "rds",
            region_name=c["region"],
            aws_access_key_id=c["akid"],
            aws_secret_access_key=c["secret"],
            aws_session_token=c["session_token"],
        )
        out.append(
            client.generate_db_auth_token(
                DBHostname=c["host"], Port=c["port"], DBUsername=c["user"], Region=c["region"]
            )
        )
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
