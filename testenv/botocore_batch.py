#!/usr/bin/env python3
"""botocore's generate_db_auth_token for many cases at once (the reference
for the agent's differential test).

stdin: a JSON array of {host, port, user, region, akid, secret,
session_token (or null), time (unix seconds), expires (optional, seconds,
default 900)}; stdout: a JSON array of tokens in the same order. Run with the
project's venv.

generate_db_auth_token always signs X-Amz-Expires=900; for another
`expires` the same presigning call is made with that expires_in (the agent
lowers it to the life left of credentials that expire sooner).
"""

import datetime
import json
import sys

import botocore.auth
import botocore.awsrequest
import botocore.session


def db_auth_token(client, c):
    expires = c.get("expires", 900)
    if expires == 900:
        return client.generate_db_auth_token(
            DBHostname=c["host"], Port=c["port"], DBUsername=c["user"], Region=c["region"]
        )
    # botocore.signers.generate_db_auth_token with expires_in=expires.
    request_dict = {
        "url_path": "/",
        "query_string": "",
        "headers": {},
        "body": {"Action": "connect", "DBUser": c["user"]},
        "method": "GET",
    }
    scheme = "https://"
    botocore.awsrequest.prepare_request_dict(request_dict, f"{scheme}{c['host']}:{c['port']}")
    url = client._request_signer.generate_presigned_url(
        operation_name="connect",
        request_dict=request_dict,
        region_name=c["region"],
        expires_in=expires,
        signing_name="rds-db",
    )
    return url[len(scheme):]


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
        out.append(db_auth_token(client, c))
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
