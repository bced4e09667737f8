"""PAM module (for libpam-python) that checks a password like Amazon RDS checks
an IAM auth token.

Loaded by pam_python.so, with the system python3, inside the PostgreSQL
backend (testenv/pgrds) or MariaDB's setuid helper auth_pam_tool
(testenv/mariadbrds), so it uses the standard library only and shares no code
with the project: the SigV4 verification below is an independent
implementation.

The password is PAM_AUTHTOK if a module before set it, else the answer to one
PAM_PROMPT_ECHO_OFF conversation prompt. Neither server sets PAM_AUTHTOK.
MariaDB's auth_pam answers the first echo-off prompt with the password the
client sent (mysql_clear_password, with pam_use_cleartext_plugin=ON); any
other prompt would go to the client as a `dialog` question, which a
cleartext-only client cannot answer. The log says which way it came (via=).

pam.d line:
    auth required /path/to/pam_python.so /path/to/pam_rds_iam.py /path/to/config.json

config.json:
    {"endpoint": "localhost:5432",        # host:port the token must be for
     "region": "us-east-1",               # optional; if set the scope must match
     "keys": "/path/to/keys.json",        # keystore, re-read at every auth
     "log": "/path/to/pam_rds_iam.log",   # decisions (never tokens) go here
     "max_future_skew_seconds": 300}      # optional, default 300

keys.json:
    {"AKID": {"secret_access_key": "...", "session_token": "..." or null}}

The password must be an `rds-db:connect` SigV4 presigned token as produced by
botocore's generate_db_auth_token:
    host:port/?Action=connect&DBUser=U&X-Amz-Algorithm=AWS4-HMAC-SHA256
      &X-Amz-Credential=AKID/YYYYMMDD/REGION/rds-db/aws4_request
      &X-Amz-Date=YYYYMMDDTHHMMSSZ&X-Amz-Expires=900&X-Amz-SignedHeaders=host
      [&X-Amz-Security-Token=...]&X-Amz-Signature=HEX

The canonical request is
    GET\n/\n<canonical query without X-Amz-Signature>\nhost:<host[:port]>\n\nhost\n<sha256("") hex>
Note the payload hash: botocore's presigned rds-db token uses sha256 of the
empty body, not the literal UNSIGNED-PAYLOAD that S3 presigned URLs use
(checked empirically against botocore's generate_db_auth_token). The host header follows botocore: lower-case
host, ":port" omitted only for port 443.

It can also be run directly to check a token without PAM:
    python3 pam_rds_iam.py CONFIG USER < token     (prints ACCEPT/REJECT reason)
"""

import datetime
import hashlib
import hmac
import json
import os
import sys
import time
import urllib.parse

# Presigned rds-db tokens from botocore hash the (empty) payload: sha256(""),
# NOT the literal UNSIGNED-PAYLOAD (verified empirically against botocore).
PAYLOAD_HASH = hashlib.sha256(b"").hexdigest()
MAX_EXPIRES = 900
DEFAULT_FUTURE_SKEW = 300
ALLOWED_PARAMS = {
    "Action",
    "DBUser",
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Security-Token",
    "X-Amz-Signature",
}
REQUIRED_PARAMS = ALLOWED_PARAMS - {"X-Amz-Security-Token"}
_UNRESERVED = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~"
)


class Reject(Exception):
    """The token is not acceptable; the message is the reason (no secrets)."""


def sigv4_encode(s):
    """URI-encode per SigV4: every byte except unreserved characters as %XX."""
    out = []
    for b in s.encode("utf-8"):
        c = chr(b)
        out.append(c if c in _UNRESERVED else "%%%02X" % b)
    return "".join(out)


def _hmac(key, msg):
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret, date, region, service):
    k = _hmac(("AWS4" + secret).encode("utf-8"), date)
    k = _hmac(k, region)
    k = _hmac(k, service)
    return _hmac(k, "aws4_request")


def canonical_host(host, port):
    host = host.lower()
    return host if port == 443 else "%s:%d" % (host, port)


def split_endpoint(hostport):
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise Reject("token does not start with host:port")
    port = int(port)
    if not 1 <= port <= 65535:
        raise Reject("token port out of range")
    return host, port


def parse_query(query):
    params = {}
    for part in query.split("&"):
        if "=" not in part:
            raise Reject("malformed query parameter (no '=')")
        k, v = part.split("=", 1)
        try:
            k = urllib.parse.unquote(k, errors="strict")
            v = urllib.parse.unquote(v, errors="strict")
        except UnicodeDecodeError:
            raise Reject("query parameter is not valid percent-encoded UTF-8")
        if k in params:
            raise Reject("duplicate query parameter %s" % k)
        params[k] = v
    return params


def load_keys(path):
    with open(path, "r", encoding="utf-8") as f:
        keys = json.load(f)
    if not isinstance(keys, dict):
        raise ValueError("keystore %s is not a JSON object" % path)
    return keys


def verify(token, pam_user, cfg, now=None):
    """Return a short human reason on success; raise Reject otherwise."""
    if now is None:
        now = time.time()
    if any(ord(c) < 0x21 or ord(c) > 0x7E for c in token):
        raise Reject("token contains whitespace, control or non-ASCII characters")
    if "://" in token.split("/", 1)[0] or token.startswith(("http:", "https:")):
        raise Reject("token must not carry a URL scheme")
    hostport, sep, rest = token.partition("/")
    if not sep:
        raise Reject("token has no '/' after host:port")
    path, qsep, query = rest.partition("?")
    if path != "" or not qsep:
        raise Reject("token path must be exactly '/?'")
    host, port = split_endpoint(hostport)
    want_host, want_port = split_endpoint(cfg["endpoint"])
    if host.lower() != want_host.lower() or port != want_port:
        raise Reject(
            "token is for endpoint %s, this server is %s" % (hostport, cfg["endpoint"])
        )

    p = parse_query(query)
    unknown = sorted(set(p) - ALLOWED_PARAMS)
    if unknown:
        raise Reject("unexpected query parameters: %s" % ", ".join(unknown))
    missing = sorted(REQUIRED_PARAMS - set(p))
    if missing:
        raise Reject("missing query parameters: %s" % ", ".join(missing))

    if p["Action"] != "connect":
        raise Reject("Action is %r, expected 'connect'" % p["Action"])
    if p["DBUser"] != pam_user:
        raise Reject("DBUser %r does not match login user %r" % (p["DBUser"], pam_user))
    if p["X-Amz-Algorithm"] != "AWS4-HMAC-SHA256":
        raise Reject("unsupported X-Amz-Algorithm %r" % p["X-Amz-Algorithm"])
    if p["X-Amz-SignedHeaders"] != "host":
        raise Reject("X-Amz-SignedHeaders is %r, expected 'host'" % p["X-Amz-SignedHeaders"])

    scope = p["X-Amz-Credential"].split("/")
    if len(scope) != 5:
        raise Reject("X-Amz-Credential does not have 5 '/'-separated parts")
    akid, scope_date, region, service, terminator = scope
    if service != "rds-db" or terminator != "aws4_request":
        raise Reject("credential scope service/terminator is %s/%s" % (service, terminator))
    want_region = cfg.get("region")
    if want_region and region != want_region:
        raise Reject("credential scope region %r, expected %r" % (region, want_region))

    amz_date = p["X-Amz-Date"]
    try:
        signed_at = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(
            tzinfo=datetime.timezone.utc
        )
    except ValueError:
        raise Reject("X-Amz-Date %r is not YYYYMMDDTHHMMSSZ" % amz_date)
    if len(amz_date) != 16 or scope_date != amz_date[:8]:
        raise Reject("credential scope date %r does not match X-Amz-Date" % scope_date)
    expires = p["X-Amz-Expires"]
    if not expires.isdigit() or not 1 <= int(expires) <= MAX_EXPIRES:
        raise Reject("X-Amz-Expires %r is not in 1..%d" % (expires, MAX_EXPIRES))
    signed_ts = signed_at.timestamp()
    skew = int(cfg.get("max_future_skew_seconds", DEFAULT_FUTURE_SKEW))
    if signed_ts > now + skew:
        raise Reject("token is dated %ds in the future" % int(signed_ts - now))
    if now > signed_ts + int(expires):
        raise Reject("token expired %ds ago" % int(now - signed_ts - int(expires)))

    keys = load_keys(cfg["keys"])
    entry = keys.get(akid)
    if not isinstance(entry, dict) or not isinstance(entry.get("secret_access_key"), str):
        raise Reject("unknown access key id %s" % akid)
    want_session = entry.get("session_token")
    got_session = p.get("X-Amz-Security-Token")
    if want_session is None:
        if got_session is not None:
            raise Reject("X-Amz-Security-Token present but key %s has no session token" % akid)
    elif got_session is None:
        raise Reject("X-Amz-Security-Token missing for key %s" % akid)
    elif not hmac.compare_digest(got_session.encode("utf-8"), want_session.encode("utf-8")):
        raise Reject("X-Amz-Security-Token does not match key %s" % akid)

    canonical_query = "&".join(
        "%s=%s" % (sigv4_encode(k), sigv4_encode(v))
        for k, v in sorted(p.items())
        if k != "X-Amz-Signature"
    )
    canonical_request = "\n".join(
        [
            "GET",
            "/",
            canonical_query,
            "host:%s\n" % canonical_host(host, port),
            "host",
            PAYLOAD_HASH,
        ]
    )
    string_to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            amz_date,
            "/".join(scope[1:]),
            hashlib.sha256(canonical_request.encode("utf-8")).hexdigest(),
        ]
    )
    key = signing_key(entry["secret_access_key"], scope_date, region, service)
    expected = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode("ascii"), p["X-Amz-Signature"].encode("utf-8")):
        raise Reject("signature mismatch")
    return "valid token for key %s, %ds of %ss life left" % (
        akid,
        min(int(signed_ts + int(expires) - now), int(expires)),
        expires,
    )


def token_akid(token):
    """The access key id of a token, for the log (it is not a secret)."""
    try:
        cred = parse_query(token.partition("?")[2]).get("X-Amz-Credential", "")
    except Reject:
        return "-"
    akid = cred.split("/", 1)[0]
    return akid if akid and all(c.isalnum() for c in akid) else "-"


def token_fingerprint(token):
    """The first 12 hex digits of the token's SHA-256: which logins used the
    same token, without the token (a hash prefix reveals nothing usable)."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()[:12] if token else "-"


def log_decision(cfg, user, decision, reason, akid="-", via="-", fp="-"):
    path = cfg.get("log") if isinstance(cfg, dict) else None
    if not path:
        return
    line = "%s pid=%d fp=%s user=%r via=%s akid=%s %s: %s\n" % (
        datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        os.getpid(),
        fp,
        user,
        via,
        akid,
        decision,
        reason,
    )
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)
    except OSError:
        pass


def load_config(path):
    with open(path, "r", encoding="utf-8") as f:
        cfg = json.load(f)
    for k in ("endpoint", "keys"):
        if not isinstance(cfg.get(k), str):
            raise ValueError("config %s lacks string field %r" % (path, k))
    return cfg


def check(token, user, cfg):
    """(accepted, reason), never raises."""
    try:
        return True, verify(token, user, cfg)
    except Reject as e:
        return False, str(e)
    except Exception as e:  # keystore unreadable, bad config, ...
        return False, "internal error: %s: %s" % (type(e).__name__, e)


# ---- libpam-python entry points -------------------------------------------


def pam_sm_authenticate(pamh, flags, argv):
    cfg = {}
    user = None
    try:
        if len(argv) < 2:
            return pamh.PAM_SERVICE_ERR
        cfg = load_config(argv[1])
        user = pamh.get_user(None)
        if not user:
            log_decision(cfg, user, "REJECT", "no PAM_USER")
            return pamh.PAM_USER_UNKNOWN
        password = pamh.authtok
        via = "authtok"
        if not password:
            msg = pamh.Message(pamh.PAM_PROMPT_ECHO_OFF, "Password: ")
            resp = pamh.conversation(msg)
            password = resp.resp
            via = "conversation"
        if not password:
            log_decision(cfg, user, "REJECT", "empty password", via=via)
            return pamh.PAM_AUTH_ERR
        ok, reason = check(password, user, cfg)
        log_decision(
            cfg,
            user,
            "ACCEPT" if ok else "REJECT",
            "%s (password %d bytes)" % (reason, len(password)),
            token_akid(password),
            via,
            token_fingerprint(password),
        )
        return pamh.PAM_SUCCESS if ok else pamh.PAM_AUTH_ERR
    except Exception as e:
        log_decision(cfg, user, "REJECT", "module error: %s: %s" % (type(e).__name__, e))
        return pamh.PAM_AUTH_ERR


def pam_sm_setcred(pamh, flags, argv):
    return pamh.PAM_SUCCESS


def pam_sm_acct_mgmt(pamh, flags, argv):
    return pamh.PAM_SUCCESS


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: pam_rds_iam.py CONFIG USER < token")
    ok, why = check(sys.stdin.read().strip(), sys.argv[2], load_config(sys.argv[1]))
    print(("ACCEPT: " if ok else "REJECT: ") + why)
    sys.exit(0 if ok else 1)
