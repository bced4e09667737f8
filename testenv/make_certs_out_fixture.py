#!/usr/bin/env python3
"""Test fixture: write a directory laid out like `rds-iam-webhook certs --out DIR` output.

Used by tests/tests/manifests.rs to check that the base in manifests/ composes with that
layout (kustomization.yaml -> [base, secret.yaml] + caBundle patch) and that
testenv/validate_manifests.py catches a wrong certificate. It is NOT the certificate tool:
`rds-iam-webhook certs` (rcgen) is; run the validator on its real output with
`bash testenv/validate-manifests.sh certs/out`.

    make_certs_out_fixture.py OUTDIR [--dns NAME] [--days N] [--foreign-ca]

--dns        SAN of the serving certificate (default rds-iam-webhook.rds-iam-system.svc)
--foreign-ca put a different CA in the caBundle than the one that signed tls.crt
The key pair is generated on every run and exists only in OUTDIR.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def make_ca(now: datetime.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rds-iam-webhook-ca")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--dns", default="rds-iam-webhook.rds-iam-system.svc")
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--foreign-ca", action="store_true")
    a = ap.parse_args()

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, ca = make_ca(now)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, a.dns)]))
        .issuer_name(ca.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=a.days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(a.dns)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    bundle_ca = make_ca(now)[1] if a.foreign_ca else ca

    pem = lambda c: c.public_bytes(serialization.Encoding.PEM)  # noqa: E731
    key_pem = leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731

    os.makedirs(a.out, exist_ok=True)
    base = os.path.relpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "manifests"), a.out)
    files = {
        "ca.crt": pem(bundle_ca).decode(),
        "tls.crt": pem(leaf).decode(),
        "tls.key": key_pem.decode(),
        "secret.yaml": f"""apiVersion: v1
kind: Secret
metadata:
  name: rds-iam-webhook-tls
  namespace: rds-iam-system
type: kubernetes.io/tls
data:
  tls.crt: {b64(pem(leaf))}
  tls.key: {b64(key_pem)}
""",
        "cabundle-patch.yaml": f"""apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: rds-iam-webhook
webhooks:
  - name: inject.rds-iam-injector.io
    clientConfig:
      caBundle: {b64(pem(bundle_ca))}
""",
        "kustomization.yaml": f"""apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - {base}
  - secret.yaml
patches:
  - path: cabundle-patch.yaml
""",
    }
    for name, text in files.items():
        path = os.path.join(a.out, name)
        with open(path, "w") as f:
            f.write(text)
        if name in ("tls.key", "secret.yaml"):
            os.chmod(path, 0o600)


if __name__ == "__main__":
    main()
