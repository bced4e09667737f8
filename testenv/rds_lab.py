"""Shared parts of the RDS-like database labs (testenv/pgrds/pg-rds and
testenv/mariadbrds/mariadb-rds): running commands as the server's user, the
certificates (self-signed, or a lab CA and a server certificate), the PAM services running the verifier
(testenv/pgrds/pam_rds_iam.py), the keystore, and the owner-pid watcher that
cleans up after a test process that is gone.

Standard library only (the `cryptography` package is an optional fallback for
the certificate when the openssl CLI is missing).
"""

import glob
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import time

TESTENV = os.path.dirname(os.path.abspath(__file__))
# The one verifier both labs load through libpam-python.
MODULE = os.path.join(TESTENV, "pgrds", "pam_rds_iam.py")
SETUP_HINT = "run testenv/setup.sh (as root) to install the test dependencies"


class Fail(Exception):
    pass


def log(msg):
    print("%s: %s" % (os.path.basename(sys.argv[0]), msg), file=sys.stderr, flush=True)


def clean_env():
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "LC_ALL": "C",
        "LANG": "C",
    }


def run(cmd, cwd, stdin=None, user=None):
    """Run cmd (as `user` through runuser, if given); return its output or
    raise Fail with it."""
    if user:
        cmd = ["runuser", "-u", user, "--"] + cmd
    p = subprocess.run(
        cmd,
        cwd=cwd,
        env=clean_env(),
        input=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if p.returncode != 0:
        raise Fail("command failed (%d): %s\n%s" % (p.returncode, " ".join(cmd), p.stdout))
    return p.stdout


def require_root(what):
    if os.geteuid() != 0:
        raise Fail("must run as root (%s)" % what)


def user_ids(name):
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise Fail("no '%s' system user; %s" % (name, SETUP_HINT))
    return pw.pw_uid, pw.pw_gid


def find_pam_python():
    pats = [
        "/lib/security/pam_python.so",
        "/usr/lib/security/pam_python.so",
        "/lib/*/security/pam_python.so",
        "/usr/lib/*/security/pam_python.so",
        "/lib64/security/pam_python.so",
    ]
    for pat in pats:
        for f in sorted(glob.glob(pat)):
            if os.path.isfile(f):
                return f
    raise Fail("pam_python.so (Debian package libpam-python) not found; " + SETUP_HINT)


def check_common():
    """Fail unless what every lab needs is installed; return pam_python.so."""
    pam_python = find_pam_python()
    if not shutil.which("runuser"):
        raise Fail("runuser (util-linux) not found; " + SETUP_HINT)
    if not shutil.which("openssl"):
        try:
            import cryptography  # noqa: F401
        except ImportError:
            raise Fail("neither the openssl CLI nor python 'cryptography' is available; " + SETUP_HINT)
    if not os.path.isfile(MODULE):
        raise Fail("missing %s" % MODULE)
    return pam_python


def check_dir_arg(d):
    if re.search(r"\s", d):
        raise Fail("--dir must not contain whitespace (it goes into a pam.d line)")


def parse_endpoint(endpoint):
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit():
        raise Fail("--endpoint must be HOST:PORT, got %r" % endpoint)
    return host, int(port)


def check_port(port):
    if not 1 <= port <= 65535:
        raise Fail("--port must be 1..65535")


def check_traversable(d, uid, user):
    """Every parent of d must be traversable by uid."""
    p = os.path.dirname(d)
    while p != "/":
        st = os.stat(p)
        if not st.st_mode & 0o001 and not (st.st_uid == uid and st.st_mode & 0o100):
            raise Fail("%s cannot traverse %s (mode %o); use a dir under /tmp" % (user, p, st.st_mode & 0o7777))
        p = os.path.dirname(p)


def write_file(path, text, uid, gid, mode):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    os.chown(path, uid, gid)
    os.chmod(path, mode)


def make_cert(d, host, uid, gid):
    """DIR/server.crt (0644) and DIR/server.key (0600), owned by uid:gid:
    self-signed, SAN localhost, 127.0.0.1 and host."""
    crt = os.path.join(d, "server.crt")
    key = os.path.join(d, "server.key")
    sans = cert_sans(host)
    openssl = shutil.which("openssl")
    if openssl and not os.environ.get("PGRDS_NO_OPENSSL"):
        run(
            [
                openssl, "req", "-x509", "-nodes", "-days", "7",
                "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-subj", "/CN=" + host,
                "-addext", "subjectAltName=" + ",".join(sans),
                "-keyout", key, "-out", crt,
            ],
            cwd=d,
        )
    else:
        make_cert_python(crt, key, host, sans)
    for f, mode in ((crt, 0o644), (key, 0o600)):
        os.chown(f, uid, gid)
        os.chmod(f, mode)
    return crt, key


def make_ca_and_cert(d, host, uid, gid):
    """DIR/ca.crt (0644), a lab CA, and DIR/server.crt (0644) with
    DIR/server.key (0600), a server certificate it signed (not a CA; SAN
    localhost, 127.0.0.1 and host), owned by uid:gid: the layout of RDS,
    whose servers present a leaf certificate under the RDS CA. Clients that
    verify trust ca.crt. The CA's key is deleted."""
    ca = os.path.join(d, "ca.crt")
    crt = os.path.join(d, "server.crt")
    key = os.path.join(d, "server.key")
    sans = cert_sans(host)
    openssl = shutil.which("openssl")
    if openssl and not os.environ.get("PGRDS_NO_OPENSSL"):
        ca_key = os.path.join(d, "ca.key")
        csr = os.path.join(d, "server.csr")
        ext = os.path.join(d, "server.ext")
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        try:
            run([openssl, "req", "-x509", "-nodes", "-days", "7"] + ec
                + ["-subj", "/CN=rds-iam test lab CA", "-keyout", ca_key, "-out", ca], cwd=d)
            run([openssl, "req", "-new", "-nodes"] + ec
                + ["-subj", "/CN=" + host, "-keyout", key, "-out", csr], cwd=d)
            with open(ext, "w", encoding="utf-8") as f:
                f.write("basicConstraints=critical,CA:FALSE\n"
                        "keyUsage=critical,digitalSignature\n"
                        "extendedKeyUsage=serverAuth\n"
                        "subjectAltName=%s\n" % ",".join(sans))
            run([openssl, "x509", "-req", "-days", "7", "-in", csr, "-CA", ca, "-CAkey", ca_key,
                 "-CAcreateserial", "-extfile", ext, "-out", crt], cwd=d)
        finally:
            for f in (ca_key, csr, ext, os.path.join(d, "ca.srl")):
                if os.path.exists(f):
                    os.remove(f)
    else:
        make_ca_and_cert_python(ca, crt, key, host, sans)
    for f, mode in ((ca, 0o644), (crt, 0o644), (key, 0o600)):
        os.chown(f, uid, gid)
        os.chmod(f, mode)
    return ca, crt, key


def cert_sans(host):
    sans = ["DNS:localhost", "IP:127.0.0.1"]
    if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", host):
        if host != "127.0.0.1":
            sans.append("IP:" + host)
    elif host != "localhost":
        sans.append("DNS:" + host)
    return sans


def make_ca_and_cert_python(ca_path, crt, key, host, sans):
    """make_ca_and_cert without the openssl CLI: needs `cryptography`."""
    try:
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        raise Fail("neither the openssl CLI nor python 'cryptography' is available; " + SETUP_HINT)
    now = datetime.datetime.now(datetime.timezone.utc)

    def builder(subject, issuer, public_key):
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=7))
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rds-iam test lab CA")])
    ca_cert = (
        builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    k = ec.generate_private_key(ec.SECP256R1())
    alt = []
    for s in sans:
        kind, val = s.split(":", 1)
        alt.append(x509.IPAddress(ipaddress.ip_address(val)) if kind == "IP" else x509.DNSName(val))
    cert = (
        builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]), ca_name, k.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    with open(key, "wb") as f:
        f.write(k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()))
    with open(crt, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(ca_path, "wb") as f:
        f.write(ca_cert.public_bytes(serialization.Encoding.PEM))


def make_cert_python(crt, key, host, sans):
    """Fallback without the openssl CLI: needs the `cryptography` package."""
    try:
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        raise Fail("neither the openssl CLI nor python 'cryptography' is available; " + SETUP_HINT)
    k = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    alt = []
    for s in sans:
        kind, val = s.split(":", 1)
        alt.append(x509.IPAddress(ipaddress.ip_address(val)) if kind == "IP" else x509.DNSName(val))
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(k.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(k, hashes.SHA256())
    )
    with open(key, "wb") as f:
        f.write(
            k.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(crt, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


# ---- PAM services -------------------------------------------------------


def install_verifier(d, uid, gid):
    """Copy the verifier into DIR (owned by uid:gid, 0644) and create its
    decision log; return (module path, log path)."""
    module = os.path.join(d, "pam_rds_iam.py")
    shutil.copyfile(MODULE, module)
    os.chown(module, uid, gid)
    os.chmod(module, 0o644)
    pam_log = os.path.join(d, "pam_rds_iam.log")
    write_file(pam_log, "", uid, gid, 0o644)
    return module, pam_log


def write_pam_services(d, pam_dir, services, *, pam_python, module, keys, pam_log, region, uid, gid, writer):
    """One PAM service, and one verifier config, per endpoint.

    services: [(service name, "host:port" the tokens must be for, config file
    name in DIR)]. The names are listed in DIR/pam-service for
    remove_pam_services."""
    write_file(os.path.join(d, "pam-service"), "".join(s + "\n" for s, _, _ in services), uid, gid, 0o644)
    for svc, endpoint, cfg_name in services:
        cfg = {"endpoint": endpoint, "keys": keys, "log": pam_log}
        if region:
            cfg["region"] = region
        pam_cfg = os.path.join(d, cfg_name)
        write_file(pam_cfg, json.dumps(cfg, indent=2) + "\n", uid, gid, 0o644)
        # The full path of pam_python.so: libpam looks a bare module name up
        # in its multiarch dir, and libpam-python installs to /lib/security.
        with open(os.path.join(pam_dir, svc), "w", encoding="utf-8") as f:
            f.write(
                "# written by %s for %s; removed by its `stop`\n"
                "auth    required %s %s %s\n"
                "account required pam_permit.so\n" % (writer, d, pam_python, module, pam_cfg)
            )


def remove_pam_services(d, pam_dir, name_re, problems):
    """Remove the pam.d files listed in DIR/pam-service (only names that
    match name_re, so a tampered list cannot delete other files)."""
    try:
        with open(os.path.join(d, "pam-service")) as f:
            services = f.read().split()
        for service in services:
            if re.fullmatch(name_re, service):
                try:
                    os.unlink(os.path.join(pam_dir, service))
                except FileNotFoundError:
                    pass
    except OSError as e:
        problems.append("pam service: %s" % e)


def add_key(d, akid, secret, session_token, uid, gid):
    """Add/replace a key in DIR's keystore (the path in DIR/pam.json),
    atomically, mode 0600 owned by uid:gid."""
    with open(os.path.join(d, "pam.json"), encoding="utf-8") as f:
        keys_path = json.load(f)["keys"]
    try:
        with open(keys_path, encoding="utf-8") as f:
            keys = json.load(f)
    except FileNotFoundError:
        keys = {}
    keys[akid] = {"secret_access_key": secret, "session_token": session_token}
    tmp = keys_path + ".tmp"
    write_file(tmp, json.dumps(keys, indent=2) + "\n", uid, gid, 0o600)
    os.rename(tmp, keys_path)


def prepare_keys(keys, d, uid, gid, check_user):
    """An empty keystore if none exists; readable by check_user (None: root)."""
    keys = os.path.abspath(keys)
    if not os.path.exists(keys):
        write_file(keys, "{}\n", uid, gid, 0o600)
    elif os.path.dirname(keys) == d:
        os.chown(keys, uid, gid)
    if check_user:
        run(["test", "-r", keys], cwd=d, user=check_user)
    return keys


def tail(path, n=60):
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError as e:
        return "(cannot read %s: %s)" % (path, e)


# ---- the owner-pid watcher ----------------------------------------------


def proc_start_time(pid):
    try:
        with open("/proc/%d/stat" % pid, "r") as f:
            stat = f.read()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def start_watcher(script, d, owner_pid):
    """Run `script _watch` detached: it calls the script's stop and deletes
    DIR once owner_pid is gone (or reused by another process)."""
    st = proc_start_time(owner_pid)
    if st is None:
        raise Fail("--owner-pid %d is not a running process" % owner_pid)
    out = open(os.path.join(d, "watch.log"), "ab")
    p = subprocess.Popen(
        [sys.executable, os.path.abspath(script), "_watch", "--dir", d,
         "--owner-pid", str(owner_pid), "--owner-start", st],
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=out,
        cwd="/",
        start_new_session=True,
        close_fds=True,
    )
    out.close()
    with open(os.path.join(d, "watch.pid"), "w") as f:
        f.write("%d\n" % p.pid)


def watch(a, stop):
    """The `_watch` command: poll the owner, then stop(d) and delete DIR."""
    d = os.path.abspath(a.dir)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(0.5)
        if not os.path.isdir(d):
            return
        if not pid_alive(a.owner_pid) or proc_start_time(a.owner_pid) != a.owner_start:
            log("owner %d is gone: stopping %s" % (a.owner_pid, d))
            stop(d, quiet=True, kill_watcher=False)
            shutil.rmtree(d, ignore_errors=True)
            return


def kill_watcher(d):
    try:
        with open(os.path.join(d, "watch.pid")) as f:
            wpid = int(f.read().strip())
        if wpid != os.getpid():
            os.kill(wpid, signal.SIGTERM)
    except (OSError, ValueError):
        pass


def add_watch_parser(sub):
    w = sub.add_parser("_watch")
    w.add_argument("--dir", required=True)
    w.add_argument("--owner-pid", type=int, required=True)
    w.add_argument("--owner-start", required=True)


def add_key_parser(sub):
    k = sub.add_parser("add-key", help="register an access key (keystore of a started DIR)")
    k.add_argument("--dir", required=True)
    k.add_argument("--akid", required=True)
    k.add_argument("--secret", required=True)
    k.add_argument("--session-token", default=None)


def main(parser, commands):
    a = parser.parse_args()
    try:
        commands[a.cmd](a)
    except Fail as e:
        log("error: %s" % e)
        sys.exit(1)
