#!/usr/bin/env python3
"""Print botocore's RDS IAM auth token (generate_db_auth_token) on stdout.

The reference implementation for the harness self-test and for differential
tests of the token agent. Run it with the project's venv:

    .venv/bin/python testenv/botocore_token.py --host db.example --port 5432 \
        --user app --region us-east-1 --akid AKID --secret SECRET \
        [--session-token TOKEN] [--time UNIX_SECONDS]

--time pins the signing clock (botocore reads it through
botocore.auth.get_current_datetime), so a token can be made for any moment,
e.g. one that is already expired.
"""

import argparse
import datetime
import sys

import botocore.auth
import botocore.session


def pin_clock(unix_seconds):
    fixed = datetime.datetime.fromtimestamp(unix_seconds, tz=datetime.timezone.utc)
    if not hasattr(botocore.auth, "get_current_datetime"):
        sys.exit(
            "botocore_token.py: this botocore has no botocore.auth.get_current_datetime; "
            "--time cannot be applied"
        )

    def fake_now(remove_tzinfo=True):
        return fixed.replace(tzinfo=None) if remove_tzinfo else fixed

    botocore.auth.get_current_datetime = fake_now


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", required=True)
    p.add_argument("--port", required=True, type=int)
    p.add_argument("--user", required=True)
    p.add_argument("--region", required=True)
    p.add_argument("--akid", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--session-token", default=None)
    p.add_argument("--time", type=int, default=None, help="signing time, unix seconds")
    a = p.parse_args()

    if a.time is not None:
        pin_clock(a.time)

    session = botocore.session.Session()
    client = session.create_client(
        "rds",
        region_name=a.region,
        aws_access_key_id=a.akid,
        aws_secret_access_key=a.secret,
        aws_session_token=a.session_token,
    )
    token = client.generate_db_auth_token(
        DBHostname=a.host, Port=a.port, DBUsername=a.user, Region=a.region
    )
    sys.stdout.write(token + "\n")


if __name__ == "__main__":
    main()
