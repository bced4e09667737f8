#!/usr/bin/env python3
"""Validate rendered Kubernetes manifests, one result line per object.

Called by testenv/validate-manifests.sh with bundles rendered by `kubectl kustomize`:

    validate_manifests.py --kubernetes-validate PATH -k 1.30.0 -k 1.33.0 LABEL=FILE [LABEL=FILE ...]

What is checked, and how:

1. Built-in kinds: `kubernetes-validate --strict` (the CLI itself, once, over one file per
   object) for every requested Kubernetes version. An object passes only if the CLI prints
   "passed" for it for every version. Anything else fails it, including the CLI's WARN
   "Couldn't find schema" (which the CLI itself treats as success): an unknown kind or
   apiVersion is an error here, never a skip.
2. cert-manager.io/v1 Issuer, ClusterIssuer and Certificate (CRDs: kubernetes-validate has no
   schema for them) are checked by hand against the cert-manager v1 API: allowed fields at
   each level, required fields, enums, duration syntax and bounds (see check_issuer and
   check_certificate). Any other CRD kind fails through step 1.
3. Project policy (see POLICY below): pod security (the "restricted" Pod Security Standard's
   rules), the webhook's Deployment, Service, PDB, ServiceAccount and
   MutatingWebhookConfiguration contract from issue 4, the CEL matchCondition compiled and
   evaluated with cel-python, cross-object references inside each bundle (selectors, ports,
   Secret names, cert-manager issuer chain and caBundle injection), and the rds-iam/*
   annotations of opted-in workloads.

Exit status: 0 if every object passed, 1 otherwise. Last line: "N passed, M failed".
"""

from __future__ import annotations

import argparse
import base64
import datetime
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable

import yaml

try:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
except ImportError:
    sys.exit("validate_manifests: cryptography is not installed; run testenv/setup.sh")

try:
    import celpy  # cel-python
except ImportError:  # a missing dependency is an error, never a skip
    sys.exit("validate_manifests: cel-python is not installed; run testenv/setup.sh")


# --------------------------------------------------------------------------------------
# Constants of the install contract (docs: /tmp/brief/contract.md, issue 4)

SYSTEM_NS = "rds-iam-system"
WEBHOOK = "rds-iam-webhook"
WEBHOOK_NAME = "inject.rds-iam-injector.io"
TLS_SECRET = "rds-iam-webhook-tls"
TLS_DIR = "/etc/rds-iam-webhook/tls"
EXCLUDED_NAMESPACES = {"kube-system", "kube-node-lease", SYSTEM_NS}
SERVICE_DNS = f"{WEBHOOK}.{SYSTEM_NS}.svc"
# Set by --release-namespace (Helm renderings): helm installs into an existing namespace, so
# the bundle has no Namespace object, and the webhook lives in the release's namespace.
RELEASE_NAMESPACE: str | None = None


def use_release_namespace(ns: str) -> None:
    global SYSTEM_NS, EXCLUDED_NAMESPACES, SERVICE_DNS, RELEASE_NAMESPACE
    RELEASE_NAMESPACE = SYSTEM_NS = ns
    EXCLUDED_NAMESPACES = {"kube-system", "kube-node-lease", ns}
    SERVICE_DNS = f"{WEBHOOK}.{ns}.svc"
RBAC_KINDS = {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}
CLUSTER_SCOPED = {
    "Namespace",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "ClusterRole",
    "ClusterRoleBinding",
    "ClusterIssuer",
    "PriorityClass",
    "CustomResourceDefinition",
}
POD_TEMPLATE_PATHS = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
GO_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")
GO_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
IAM_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$")
HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$")


@dataclass
class Obj:
    label: str  # which bundle (kustomization) it came from
    doc: dict
    results: list[str] = field(default_factory=list)  # what passed, for the summary
    failures: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return str(self.doc.get("kind", "?"))

    @property
    def api_version(self) -> str:
        return str(self.doc.get("apiVersion", "?"))

    @property
    def name(self) -> str:
        return str((self.doc.get("metadata") or {}).get("name", "?"))

    @property
    def namespace(self) -> str | None:
        return (self.doc.get("metadata") or {}).get("namespace")

    def ident(self) -> str:
        ns = self.namespace
        return f"{self.kind} {ns + '/' if ns else ''}{self.name}"

    def check(self, cond: bool, what: str, why: str) -> bool:
        """Record one policy check. `what` names the rule, `why` says what is wrong."""
        if cond:
            self.results.append(what)
        else:
            self.failures.append(f"{what}: {why}")
        return cond


def dig(d: Any, *path: str, default: Any = None) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return default
        d = d[p]
    return d


# --------------------------------------------------------------------------------------
# 1. kubernetes-validate --strict


def run_kubernetes_validate(kv: str, versions: list[str], objs: list[Obj]) -> None:
    builtin = [o for o in objs if (o.api_version, o.kind) not in CRD_CHECKS]
    if not builtin:
        return
    want = [".".join(v.split(".")[:2]) for v in versions]
    with tempfile.TemporaryDirectory(prefix="rds-iam-kv-") as tmp:
        files: dict[str, Obj] = {}
        for i, o in enumerate(builtin):
            path = os.path.join(tmp, f"obj-{i:04d}.yaml")
            with open(path, "w") as f:
                yaml.safe_dump(o.doc, f, sort_keys=False)
            files[path] = o
        cmd = [kv, "--strict"]
        for v in versions:
            cmd += ["-k", v]
        proc = subprocess.run(cmd + list(files), capture_output=True, text=True)
        seen: dict[str, set[str]] = {p: set() for p in files}
        if proc.returncode not in (0, 1, 2):  # 1, 2: an object failed (reported per object below)
            for o in builtin:
                o.failures.append(f"kubernetes-validate exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
        for line in proc.stdout.splitlines():
            m = re.match(r"^(INFO|WARN|ERROR|FATAL) (\S+) (.*)$", line)
            if not m or m.group(2) not in files:
                if line.strip():  # unexpected output: fail loudly rather than guess
                    for o in builtin:
                        o.failures.append(f"kubernetes-validate said: {line.strip()}")
                continue
            level, path, rest = m.groups()
            o = files[path]
            pm = re.match(r"^passed for resource \S+ against version (\S+)$", rest)
            if level == "INFO" and pm:
                seen[path].add(pm.group(1))
            else:
                o.failures.append(f"kubernetes-validate --strict: {level} {rest}")
        for path, o in files.items():
            missing = [v for v in want if v not in seen[path]]
            if missing:
                o.failures.append(
                    "kubernetes-validate --strict did not pass it for " + ", ".join(missing)
                )
            else:
                o.results.append("kubernetes-validate --strict " + " ".join(want))


# --------------------------------------------------------------------------------------
# 2. cert-manager.io/v1 by hand (no schema in kubernetes-validate)

META_KEYS = {"name", "namespace", "labels", "annotations"}
CERT_SPEC_KEYS = {
    "additionalOutputFormats", "commonName", "dnsNames", "duration", "emailAddresses",
    "encodeUsagesInRequest", "ipAddresses", "isCA", "issuerRef", "keystores", "literalSubject",
    "nameConstraints", "otherNames", "privateKey", "renewBefore", "renewBeforePercentage",
    "revisionHistoryLimit", "secretName", "secretTemplate", "signatureAlgorithm", "subject",
    "uris", "usages",
}
KEY_USAGES = {
    "signing", "digital signature", "content commitment", "key encipherment", "key agreement",
    "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
    "server auth", "client auth", "code signing", "email protection", "s/mime",
    "ipsec end system", "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing",
    "microsoft sgc", "netscape sgc",
}
ISSUER_TYPES = {"acme", "ca", "vault", "selfSigned", "venafi"}


def go_duration_seconds(s: str) -> float | None:
    if not isinstance(s, str) or not GO_DURATION.match(s):
        return None
    unit = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * unit[u] for n, u in GO_DURATION_PART.findall(s))


def check_crd_common(o: Obj, namespaced: bool) -> None:
    d = o.doc
    extra = set(d) - {"apiVersion", "kind", "metadata", "spec"}
    o.check(not extra, "top-level fields", f"unexpected {sorted(extra)}")
    meta = d.get("metadata") or {}
    extra = set(meta) - META_KEYS
    o.check(not extra, "metadata fields", f"unexpected {sorted(extra)}")
    o.check(bool(DNS1123_SUBDOMAIN.match(o.name)), "metadata.name", f"{o.name!r} is not a DNS-1123 subdomain")
    for k in ("labels", "annotations"):
        v = meta.get(k, {})
        o.check(
            isinstance(v, dict) and all(isinstance(x, str) and isinstance(y, str) for x, y in v.items()),
            f"metadata.{k}",
            "must map strings to strings",
        )
    if namespaced:
        o.check(bool(o.namespace) and bool(DNS1123_LABEL.match(o.namespace or "")), "metadata.namespace", "namespaced kind without a valid namespace")
    else:
        o.check(o.namespace is None, "metadata.namespace", "cluster-scoped kind must not set a namespace")
    o.check(isinstance(d.get("spec"), dict), "spec", "missing or not an object")


def check_issuer(o: Obj) -> None:
    check_crd_common(o, namespaced=o.kind == "Issuer")
    spec = o.doc.get("spec") or {}
    extra = set(spec) - ISSUER_TYPES
    o.check(not extra, "spec fields", f"unexpected {sorted(extra)}")
    types = [t for t in ISSUER_TYPES if t in spec]
    o.check(len(types) == 1, "issuer type", f"exactly one of {sorted(ISSUER_TYPES)} required, found {types}")
    if "selfSigned" in spec:
        ss = spec["selfSigned"]
        o.check(isinstance(ss, dict) and set(ss) <= {"crlDistributionPoints"}, "spec.selfSigned", "must be an object with at most crlDistributionPoints")
    if "ca" in spec:
        ca = spec["ca"]
        ok = isinstance(ca, dict)
        o.check(ok and set(ca) <= {"secretName", "crlDistributionPoints", "ocspServers", "issuingCertificateURLs"}, "spec.ca fields", f"unexpected fields in {ca!r}")
        sn = ca.get("secretName") if ok else None
        o.check(isinstance(sn, str) and bool(DNS1123_SUBDOMAIN.match(sn)), "spec.ca.secretName", "required, a Secret name")


def check_certificate(o: Obj) -> None:
    check_crd_common(o, namespaced=True)
    spec = o.doc.get("spec") or {}
    extra = set(spec) - CERT_SPEC_KEYS
    o.check(not extra, "spec fields", f"unexpected {sorted(extra)}")
    sn = spec.get("secretName")
    o.check(isinstance(sn, str) and bool(DNS1123_SUBDOMAIN.match(sn)), "spec.secretName", "required, a Secret name")
    ref = spec.get("issuerRef")
    if o.check(isinstance(ref, dict), "spec.issuerRef", "required object"):
        o.check(set(ref) <= {"name", "kind", "group"}, "spec.issuerRef fields", f"unexpected {sorted(set(ref) - {'name', 'kind', 'group'})}")
        o.check(isinstance(ref.get("name"), str) and ref["name"] != "", "spec.issuerRef.name", "required")
        if ref.get("group", "cert-manager.io") == "cert-manager.io":
            o.check(ref.get("kind", "Issuer") in {"Issuer", "ClusterIssuer"}, "spec.issuerRef.kind", f"{ref.get('kind')!r} is not Issuer or ClusterIssuer")
    ids = [k for k in ("commonName", "dnsNames", "uris", "emailAddresses", "ipAddresses", "literalSubject", "otherNames") if spec.get(k)]
    o.check(bool(ids), "subject", "at least one of commonName, dnsNames, uris, emailAddresses, ipAddresses, literalSubject, otherNames")
    if "commonName" in spec:
        cn = spec["commonName"]
        o.check(isinstance(cn, str) and 0 < len(cn) <= 64, "spec.commonName", "a string of 1..64 characters")
    for k in ("dnsNames", "uris", "emailAddresses", "ipAddresses"):
        if k in spec:
            v = spec[k]
            o.check(isinstance(v, list) and all(isinstance(x, str) and x for x in v), f"spec.{k}", "a list of non-empty strings")
    for k in ("dnsNames",):
        for n in spec.get(k) or []:
            o.check(isinstance(n, str) and bool(DNS1123_SUBDOMAIN.match(n.removeprefix("*."))), "spec.dnsNames entry", f"{n!r} is not a DNS name")
    dur = ren = None
    if "duration" in spec:
        dur = go_duration_seconds(spec["duration"])
        o.check(dur is not None and dur >= 3600, "spec.duration", f"{spec['duration']!r}: a Go duration of at least 1h")
    if "renewBefore" in spec:
        ren = go_duration_seconds(spec["renewBefore"])
        o.check(ren is not None and ren >= 300, "spec.renewBefore", f"{spec['renewBefore']!r}: a Go duration of at least 5m")
    if dur is not None and ren is not None:
        o.check(ren < dur, "renewBefore < duration", f"{spec['renewBefore']} >= {spec['duration']}")
    if "isCA" in spec:
        o.check(isinstance(spec["isCA"], bool), "spec.isCA", "must be a boolean")
    pk = spec.get("privateKey")
    if pk is not None:
        if o.check(isinstance(pk, dict), "spec.privateKey", "must be an object"):
            o.check(set(pk) <= {"algorithm", "size", "encoding", "rotationPolicy"}, "spec.privateKey fields", f"unexpected {sorted(set(pk) - {'algorithm', 'size', 'encoding', 'rotationPolicy'})}")
            alg = pk.get("algorithm", "RSA")
            o.check(alg in {"RSA", "ECDSA", "Ed25519"}, "spec.privateKey.algorithm", f"{alg!r} is not RSA, ECDSA or Ed25519")
            if "size" in pk:
                size = pk["size"]
                ok = {"ECDSA": size in (256, 384, 521), "RSA": isinstance(size, int) and 2048 <= size <= 8192}.get(alg, True)
                o.check(ok, "spec.privateKey.size", f"{size!r} is not valid for {alg}")
            if "encoding" in pk:
                o.check(pk["encoding"] in {"PKCS1", "PKCS8"}, "spec.privateKey.encoding", f"{pk['encoding']!r} is not PKCS1 or PKCS8")
            if "rotationPolicy" in pk:
                o.check(pk["rotationPolicy"] in {"Never", "Always"}, "spec.privateKey.rotationPolicy", f"{pk['rotationPolicy']!r} is not Never or Always")
    if "usages" in spec:
        bad = [u for u in spec["usages"] or [] if u not in KEY_USAGES]
        o.check(isinstance(spec["usages"], list) and not bad, "spec.usages", f"unknown usages {bad}")


SERVICE_MONITOR_SPEC_KEYS = {
    "endpoints", "selector", "namespaceSelector", "jobLabel", "targetLabels", "podTargetLabels",
    "sampleLimit", "targetLimit", "labelLimit", "labelNameLengthLimit", "labelValueLengthLimit",
    "attachMetadata", "scrapeProtocols", "bodySizeLimit", "keepDroppedTargets",
}
SERVICE_MONITOR_ENDPOINT_KEYS = {
    "port", "targetPort", "path", "scheme", "params", "interval", "scrapeTimeout", "tlsConfig",
    "bearerTokenSecret", "authorization", "honorLabels", "honorTimestamps", "basicAuth",
    "oauth2", "metricRelabelings", "relabelings", "proxyUrl", "followRedirects",
    "enableHttp2", "filterRunning", "trackTimestampsStaleness",
}


def check_service_monitor(o: Obj) -> None:
    """monitoring.coreos.com/v1 ServiceMonitor (Prometheus Operator CRD), by hand."""
    check_crd_common(o, namespaced=True)
    spec = o.doc.get("spec") or {}
    extra = set(spec) - SERVICE_MONITOR_SPEC_KEYS
    o.check(not extra, "spec fields", f"unexpected {sorted(extra)}")
    sel = spec.get("selector")
    o.check(isinstance(sel, dict) and bool(sel.get("matchLabels") or sel.get("matchExpressions")), "spec.selector", "required, with matchLabels or matchExpressions")
    eps = spec.get("endpoints")
    if not o.check(isinstance(eps, list) and len(eps) > 0, "spec.endpoints", "a non-empty list"):
        return
    for i, ep in enumerate(eps):
        extra = set(ep) - SERVICE_MONITOR_ENDPOINT_KEYS if isinstance(ep, dict) else {"<not an object>"}
        o.check(not extra, f"endpoints[{i}] fields", f"unexpected {sorted(extra)}")
        o.check(isinstance(ep.get("port"), str) and bool(ep.get("port")), f"endpoints[{i}].port", "a Service port name")
        o.check(ep.get("scheme", "http") in {"http", "https"}, f"endpoints[{i}].scheme", f"{ep.get('scheme')!r}")
        for k in ("interval", "scrapeTimeout"):
            if k in ep:
                o.check(go_duration_seconds(ep[k]) is not None, f"endpoints[{i}].{k}", f"{ep[k]!r} is not a duration")


CRD_CHECKS: dict[tuple[str, str], Callable[[Obj], None]] = {
    ("cert-manager.io/v1", "Issuer"): check_issuer,
    ("cert-manager.io/v1", "ClusterIssuer"): check_issuer,
    ("cert-manager.io/v1", "Certificate"): check_certificate,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): check_service_monitor,
}


# --------------------------------------------------------------------------------------
# 3. Project policy

CEL_ENV = celpy.Environment()

CEL_SAMPLES = [  # (pod metadata, expected); the expectation is the annotation contract
    ({}, False),
    ({"annotations": {}}, False),
    ({"annotations": {"other": "true"}}, False),
    ({"annotations": {"rds-iam/enabled": "false"}}, False),
    ({"annotations": {"rds-iam/enabled": "True"}}, False),
    ({"annotations": {"rds-iam/enabled": ""}}, False),
    ({"annotations": {"rds-iam/enabled": "true"}}, True),
    ({"annotations": {"rds-iam/enabled": "true", "rds-iam/host": "x"}}, True),
]


def cel_eval(expr: str, pod_meta: dict) -> bool:
    prog = CEL_ENV.program(CEL_ENV.compile(expr))
    return bool(prog.evaluate({"object": celpy.json_to_cel({"metadata": pod_meta})}))


def pod_spec_of(o: Obj) -> dict | None:
    path = POD_TEMPLATE_PATHS.get(o.kind)
    return dig(o.doc, *path) if path else None


def pod_meta_of(o: Obj) -> dict:
    if o.kind == "Pod":
        return o.doc.get("metadata") or {}
    path = POD_TEMPLATE_PATHS[o.kind][:-1] + ("metadata",)
    return dig(o.doc, *path) or {}


def all_containers(spec: dict) -> list[dict]:
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def check_pod_security(o: Obj, spec: dict) -> None:
    """The "restricted" Pod Security Standard, plus our no-subPath and resources rules."""
    psc = spec.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        o.check(not spec.get(flag), f"pod {flag}", "must not be set")
    o.check(not any("hostPath" in v for v in spec.get("volumes") or []), "no hostPath volumes", "hostPath volume found")
    for c in all_containers(spec):
        n = c.get("name", "?")
        sc = c.get("securityContext") or {}
        o.check(sc.get("allowPrivilegeEscalation") is False, f"{n}: allowPrivilegeEscalation", "must be false")
        o.check(not sc.get("privileged"), f"{n}: privileged", "must not be true")
        o.check("ALL" in (dig(sc, "capabilities", "drop") or []), f"{n}: capabilities drop ALL", "drop must contain ALL")
        o.check(not (dig(sc, "capabilities", "add") or []), f"{n}: capabilities add", "must be empty")
        o.check(sc.get("readOnlyRootFilesystem") is True, f"{n}: readOnlyRootFilesystem", "must be true")
        non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        o.check(non_root is True, f"{n}: runAsNonRoot", "must be true (container or pod level)")
        uid = sc.get("runAsUser", psc.get("runAsUser"))
        o.check(uid is None or (isinstance(uid, int) and uid > 0), f"{n}: runAsUser", f"{uid!r} must be a non-zero UID")
        sp = dig(sc, "seccompProfile", "type") or dig(psc, "seccompProfile", "type")
        o.check(sp in {"RuntimeDefault", "Localhost"}, f"{n}: seccompProfile", f"{sp!r}: RuntimeDefault required (container or pod level)")
        o.check(not any("subPath" in m or "subPathExpr" in m for m in c.get("volumeMounts") or []), f"{n}: no subPath mounts", "subPath mounts never see file replacements")
        req = dig(c, "resources", "requests") or {}
        o.check("cpu" in req and "memory" in req, f"{n}: resource requests", "cpu and memory requests required")
        o.check("memory" in (dig(c, "resources", "limits") or {}), f"{n}: memory limit", "a memory limit is required")


def labels_match(selector: dict, labels: dict) -> bool:
    ml = selector.get("matchLabels") or {}
    if selector.get("matchExpressions"):
        return False  # not used in our manifests; refuse rather than guess
    return bool(ml) and all(labels.get(k) == v for k, v in ml.items())


def container_port(container: dict, port: Any) -> int | None:
    for p in container.get("ports") or []:
        if port == p.get("name") or port == p.get("containerPort"):
            return p.get("containerPort")
    return None


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env") or [] if "name" in e}


def check_webhook_deployment(o: Obj, bundle: list[Obj]) -> None:
    spec = o.doc.get("spec") or {}
    pod = dig(spec, "template", "spec") or {}
    labels = dig(spec, "template", "metadata", "labels") or {}
    o.check((spec.get("replicas") or 1) >= 2, "replicas >= 2", f"replicas is {spec.get('replicas')}")
    o.check(labels_match(spec.get("selector") or {}, labels), "selector matches template labels", "it does not")
    tsc = pod.get("topologySpreadConstraints") or []
    o.check(bool(tsc) and all(labels_match(t.get("labelSelector") or {}, labels) for t in tsc), "topologySpreadConstraints", "missing, or a labelSelector does not match the pods")
    o.check(pod.get("automountServiceAccountToken") is False, "automountServiceAccountToken false", "the webhook needs no API token")
    sa = pod.get("serviceAccountName")
    o.check(any(x.kind == "ServiceAccount" and x.name == sa and x.namespace == o.namespace for x in bundle), "serviceAccountName resolves", f"no ServiceAccount {sa!r} in {o.namespace}")
    o.check(o.namespace == SYSTEM_NS, "namespace", f"must be {SYSTEM_NS}")
    if RELEASE_NAMESPACE is None:
        o.check(any(x.kind == "Namespace" and x.name == SYSTEM_NS for x in bundle), "Namespace object present", f"Namespace {SYSTEM_NS} missing from the bundle")
    psc = pod.get("securityContext") or {}
    o.check(psc.get("runAsUser") == 65532 and psc.get("runAsGroup") == 65532, "pod runs as 65532:65532", f"runAsUser/runAsGroup are {psc.get('runAsUser')}/{psc.get('runAsGroup')}")
    cs = pod.get("containers") or []
    if not o.check(len(cs) == 1, "one container", f"found {len(cs)}"):
        return
    c = cs[0]
    env = env_of(c)
    vols = {v.get("name"): v for v in pod.get("volumes") or []}
    tls_vols = [n for n, v in vols.items() if dig(v, "secret", "secretName") == TLS_SECRET]
    o.check(len(tls_vols) == 1, f"Secret {TLS_SECRET} volume", "exactly one secret volume of it required")
    mounts = [m for m in c.get("volumeMounts") or [] if m.get("name") in tls_vols]
    o.check(
        len(mounts) == 1 and mounts[0].get("mountPath") == TLS_DIR and "subPath" not in mounts[0] and mounts[0].get("readOnly") is True,
        f"TLS Secret mounted read-only as directory {TLS_DIR}",
        f"mounts: {mounts}",
    )
    for var, file in (("RDS_IAM_WEBHOOK_TLS_CERT", "tls.crt"), ("RDS_IAM_WEBHOOK_TLS_KEY", "tls.key")):
        o.check(env.get(var) == f"{TLS_DIR}/{file}", var, f"is {env.get(var)!r}, want {TLS_DIR}/{file}")
    o.check(bool(env.get("RDS_IAM_WEBHOOK_AGENT_IMAGE")), "RDS_IAM_WEBHOOK_AGENT_IMAGE", "must be set")
    mode = env.get("RDS_IAM_WEBHOOK_SIDECAR_MODE", "native")
    o.check(mode in {"native", "classic", "init-only"}, "RDS_IAM_WEBHOOK_SIDECAR_MODE", f"{mode!r} is not native, classic or init-only")
    listen = env.get("RDS_IAM_WEBHOOK_LISTEN", "0.0.0.0:8443")
    o.check(listen.endswith(":8443") and container_port(c, "https") == 8443, "HTTPS on 8443", f"listen {listen!r}, port https -> {container_port(c, 'https')}")
    mlisten = env.get("RDS_IAM_WEBHOOK_METRICS_LISTEN", "0.0.0.0:9090")
    o.check(mlisten.endswith(":9090") and container_port(c, "metrics") == 9090, "metrics on 9090", f"listen {mlisten!r}, port metrics -> {container_port(c, 'metrics')}")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        hg = dig(c, probe, "httpGet") or {}
        o.check(
            hg.get("path") == path and hg.get("scheme") == "HTTPS" and container_port(c, hg.get("port")) == 8443,
            f"{probe} {path} over HTTPS on 8443",
            f"httpGet is {hg}",
        )
    o.check((c.get("args") or [None])[0] == "serve", "args start with serve", f"args are {c.get('args')}")


def check_webhook_service(o: Obj, bundle: list[Obj]) -> None:
    spec = o.doc.get("spec") or {}
    deps = [x for x in bundle if x.kind == "Deployment" and x.name == WEBHOOK and x.namespace == o.namespace]
    if not o.check(len(deps) == 1, "webhook Deployment in bundle", "not found"):
        return
    tmpl = dig(deps[0].doc, "spec", "template") or {}
    labels = dig(tmpl, "metadata", "labels") or {}
    sel = spec.get("selector") or {}
    o.check(bool(sel) and all(labels.get(k) == v for k, v in sel.items()), "selector matches webhook pods", f"{sel} vs {labels}")
    c = (dig(tmpl, "spec", "containers") or [{}])[0]
    ports = {p.get("port"): p for p in spec.get("ports") or []}
    for port, target, name in ((443, 8443, "https"), (9090, 9090, "metrics")):
        p = ports.get(port) or {}
        o.check(p.get("name") == name and container_port(c, p.get("targetPort", port)) == target, f"port {port} -> {target} ({name})", f"port is {p}")


def check_pdb(o: Obj, bundle: list[Obj]) -> None:
    spec = o.doc.get("spec") or {}
    deps = [x for x in bundle if x.kind == "Deployment" and x.namespace == o.namespace and labels_match(spec.get("selector") or {}, dig(x.doc, "spec", "template", "metadata", "labels") or {})]
    if o.check(len(deps) == 1, "selector matches one Deployment", f"matches {len(deps)}"):
        replicas = dig(deps[0].doc, "spec", "replicas") or 1
        ma = spec.get("minAvailable")
        o.check(isinstance(ma, int) and 0 < ma < replicas, "minAvailable leaves room to evict", f"minAvailable {ma!r} with {replicas} replicas")


def check_webhook_config(o: Obj, bundle: list[Obj]) -> None:
    whs = o.doc.get("webhooks") or []
    if not o.check(len(whs) == 1 and whs[0].get("name") == WEBHOOK_NAME, f"one webhook {WEBHOOK_NAME}", f"found {[w.get('name') for w in whs]}"):
        return
    w = whs[0]
    o.check(w.get("admissionReviewVersions") == ["v1"], "admissionReviewVersions [v1]", f"is {w.get('admissionReviewVersions')}")
    o.check(w.get("sideEffects") == "None", "sideEffects None", f"is {w.get('sideEffects')!r}")
    o.check(w.get("timeoutSeconds") == 5, "timeoutSeconds 5", f"is {w.get('timeoutSeconds')!r}")
    o.check(w.get("reinvocationPolicy") == "IfNeeded", "reinvocationPolicy IfNeeded", f"is {w.get('reinvocationPolicy')!r}")
    o.check(w.get("failurePolicy") in {"Fail", "Ignore"}, "failurePolicy set explicitly", f"is {w.get('failurePolicy')!r}")
    rules = w.get("rules") or []
    o.check(
        len(rules) == 1
        and rules[0].get("operations") == ["CREATE"]
        and rules[0].get("resources") == ["pods"]
        and rules[0].get("apiGroups") == [""]
        and rules[0].get("apiVersions") == ["v1"],
        "rules: CREATE pods only",
        f"rules are {rules}",
    )
    svc = dig(w, "clientConfig", "service") or {}
    o.check(
        svc.get("name") == WEBHOOK and svc.get("namespace") == SYSTEM_NS and svc.get("path") == "/mutate" and svc.get("port", 443) == 443,
        "clientConfig.service -> rds-iam-webhook.rds-iam-system.svc:443/mutate",
        f"is {svc}",
    )
    o.check("url" not in (w.get("clientConfig") or {}), "no clientConfig.url", "must call the Service")
    o.check(any(x.kind == "Service" and x.name == svc.get("name") and x.namespace == svc.get("namespace") for x in bundle), "Service in bundle", "clientConfig names a Service the bundle does not have")
    exprs = dig(w, "namespaceSelector", "matchExpressions") or []
    excluded = set()
    for e in exprs:
        if e.get("key") == "kubernetes.io/metadata.name" and e.get("operator") == "NotIn":
            excluded |= set(e.get("values") or [])
    o.check(EXCLUDED_NAMESPACES <= excluded, f"namespaceSelector excludes {', '.join(sorted(EXCLUDED_NAMESPACES))}", f"excludes only {sorted(excluded)}")
    o.check(not dig(w, "namespaceSelector", "matchLabels"), "namespaceSelector has no matchLabels", "matchLabels would exclude unlabeled namespaces")
    conds = w.get("matchConditions") or []
    if o.check(len(conds) >= 1, "matchConditions present", "none: every pod would reach the webhook"):
        for mc in conds:
            expr = mc.get("expression", "")
            try:
                got = [(meta, cel_eval(expr, meta), want) for meta, want in CEL_SAMPLES]
            except Exception as e:  # celpy raises its own error types for parse/eval errors
                o.check(False, f"matchCondition {mc.get('name')} compiles", f"{type(e).__name__}: {e}")
                continue
            wrong = [f"{meta} -> {g} (want {w_})" for meta, g, w_ in got if g != w_]
            o.check(not wrong, f"matchCondition {mc.get('name')} admits only rds-iam/enabled=true ({len(got)} samples)", "; ".join(wrong))
    ann = dig(o.doc, "metadata", "annotations") or {}
    ca_bundle = dig(w, "clientConfig", "caBundle")
    if "cert-manager.io/inject-ca-from" in ann:
        check_cert_manager_chain(o, ann["cert-manager.io/inject-ca-from"], bundle)
    elif ca_bundle is not None:
        try:
            cas = x509.load_pem_x509_certificates(base64.b64decode(ca_bundle, validate=True))
            why = "" if all(_is_ca(c) for c in cas) else "a certificate in it is not a CA"
        except Exception as e:
            why = f"not base64 of PEM certificates: {type(e).__name__}: {e}"
        o.check(not why, "clientConfig.caBundle holds CA certificates", why)
    else:
        # The bare base: the admin supplies the caBundle (certs/out or cert-manager overlay).
        o.check(not any(x.kind == "Secret" and x.name == TLS_SECRET for x in bundle), "caBundle with TLS Secret", f"bundle ships Secret {TLS_SECRET} but no caBundle")
        o.results.append("caBundle left to certs/out or cert-manager")


def _is_ca(cert: "x509.Certificate") -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def check_cert_manager_chain(o: Obj, ref: str, bundle: list[Obj]) -> None:
    ns, _, name = ref.partition("/")
    certs = {(x.namespace, x.name): x for x in bundle if x.kind == "Certificate"}
    issuers = {(x.namespace, x.name): x for x in bundle if x.kind == "Issuer"}
    cert = certs.get((ns, name))
    if not o.check(cert is not None, "inject-ca-from names a Certificate in the bundle", f"no Certificate {ref}"):
        return
    cs = cert.doc.get("spec") or {}
    o.check(cs.get("secretName") == TLS_SECRET, f"serving Certificate writes {TLS_SECRET}", f"secretName is {cs.get('secretName')!r}")
    o.check(SERVICE_DNS in (cs.get("dnsNames") or []), f"serving Certificate covers {SERVICE_DNS}", f"dnsNames are {cs.get('dnsNames')}")
    o.check(cs.get("isCA") is not True, "serving Certificate is not a CA", "isCA is true")
    usages = cs.get("usages")
    o.check(usages is None or "server auth" in usages, "serving Certificate has server auth", f"usages are {usages}")
    iref = cs.get("issuerRef") or {}
    issuer = issuers.get((ns, iref.get("name"))) if iref.get("kind", "Issuer") == "Issuer" else None
    if not o.check(issuer is not None, "serving Certificate's Issuer in bundle", f"no Issuer {ns}/{iref.get('name')}"):
        return
    ca_secret = dig(issuer.doc, "spec", "ca", "secretName")
    if not o.check(ca_secret is not None, "serving Issuer is a CA issuer", "spec.ca missing"):
        return
    ca_certs = [x for x in certs.values() if x.namespace == ns and dig(x.doc, "spec", "secretName") == ca_secret]
    if not o.check(len(ca_certs) == 1 and dig(ca_certs[0].doc, "spec", "isCA") is True, f"CA Certificate writes {ca_secret} with isCA", f"found {[c.name for c in ca_certs]}"):
        return
    root_ref = dig(ca_certs[0].doc, "spec", "issuerRef") or {}
    root = issuers.get((ns, root_ref.get("name")))
    o.check(root is not None and "selfSigned" in (root.doc.get("spec") or {}), "CA Certificate issued by a selfSigned Issuer", f"issuerRef {root_ref}")
    dur = go_duration_seconds(cs.get("duration", "2160h")) or 0
    ca_dur = go_duration_seconds(dig(ca_certs[0].doc, "spec", "duration") or "2160h") or 0
    o.check(ca_dur > dur, "CA outlives the serving certificate", f"CA {ca_dur}s <= serving {dur}s")


def check_service_account(o: Obj) -> None:
    ann = dig(o.doc, "metadata", "annotations") or {}
    arn = ann.get("eks.amazonaws.com/role-arn")
    if arn is not None:
        o.check(bool(IAM_ROLE_ARN.match(arn)), "IRSA role ARN", f"{arn!r} is not an IAM role ARN")
    if o.name == WEBHOOK:
        o.check(o.doc.get("automountServiceAccountToken") is False, "automountServiceAccountToken false", "the webhook needs no API token")


def check_opted_in(o: Obj, bundle: list[Obj]) -> None:
    """Workloads that opt in: the annotations a pod needs, where the webhook sees them."""
    top = dig(o.doc, "metadata", "annotations") or {}
    meta = pod_meta_of(o)
    ann = meta.get("annotations") or {}
    if o.kind != "Pod" and any(k.startswith("rds-iam/") for k in top) and "rds-iam/enabled" not in ann:
        o.check(False, "rds-iam annotations on the pod template", f"found on the {o.kind} itself, where the webhook never sees them")
        return
    if "rds-iam/enabled" not in ann:
        return
    # Cross-check with the real MutatingWebhookConfiguration's CEL, when the bundle has one.
    for mwc in (x for x in bundle if x.kind == "MutatingWebhookConfiguration"):
        for w in mwc.doc.get("webhooks") or []:
            for mc in w.get("matchConditions") or []:
                o.check(cel_eval(mc.get("expression", ""), meta) == (ann["rds-iam/enabled"] == "true"), f"matchCondition {mc.get('name')} on this pod", "disagrees with the annotation")
    o.check(ann["rds-iam/enabled"] == "true", "rds-iam/enabled", f"{ann['rds-iam/enabled']!r}: only \"true\" opts in")
    host = ann.get("rds-iam/host", "")
    o.check(bool(host) and len(host) <= 253 and bool(HOSTNAME.match(host)), "rds-iam/host", f"{host!r} is not a hostname")
    user = ann.get("rds-iam/user", "")
    o.check(bool(user) and not re.search(r"[:\s\x00-\x1f\x7f]", user), "rds-iam/user", f"{user!r}: required, no ':', whitespace or control characters")
    if "rds-iam/port" in ann:
        p = ann["rds-iam/port"]
        o.check(p.isdigit() and 1 <= int(p) <= 65535, "rds-iam/port", f"{p!r} is not 1..65535")
    if "rds-iam/sslmode" in ann:
        o.check(ann["rds-iam/sslmode"] in {"require", "verify-ca", "verify-full"}, "rds-iam/sslmode", f"{ann['rds-iam/sslmode']!r}")
    if "rds-iam/sidecar" in ann:
        o.check(ann["rds-iam/sidecar"] in {"native", "classic", "init-only"}, "rds-iam/sidecar", f"{ann['rds-iam/sidecar']!r}")
    spec = pod_spec_of(o) or {}
    puid = dig(spec, "securityContext", "runAsUser")
    uids = {dig(c, "securityContext", "runAsUser") or puid for c in spec.get("containers") or []}
    o.check(None not in uids and len(uids) == 1, "one runAsUser for the app containers", f"UIDs {uids}: the agent must run as the app's UID")
    sa = spec.get("serviceAccountName")
    o.check(sa not in (None, "default"), "own ServiceAccount", "an IAM role needs a dedicated ServiceAccount")
    sas = [x for x in bundle if x.kind == "ServiceAccount" and x.name == sa and x.namespace == o.namespace]
    o.check(len(sas) == 1, "ServiceAccount in bundle", f"no ServiceAccount {sa!r} in {o.namespace}")


def check_tls_secret(o: Obj, bundle: list[Obj]) -> None:
    """A serving Secret shipped in the bundle (certs/out): a real key pair for the Service,
    signed by the caBundle of the MutatingWebhookConfiguration in the same bundle."""
    o.check(o.doc.get("type") == "kubernetes.io/tls", "type kubernetes.io/tls", f"is {o.doc.get('type')!r}")
    o.check(o.namespace == SYSTEM_NS, "namespace", f"must be {SYSTEM_NS}")
    data = o.doc.get("data") or {}
    if not o.check({"tls.crt", "tls.key"} <= set(data), "tls.crt and tls.key", f"keys {sorted(data)}"):
        return
    try:
        certs = x509.load_pem_x509_certificates(base64.b64decode(data["tls.crt"], validate=True))
        key = serialization.load_pem_private_key(base64.b64decode(data["tls.key"], validate=True), password=None)
    except Exception as e:
        o.check(False, "tls.crt/tls.key parse as PEM", f"{type(e).__name__}: {e}")
        return
    leaf = certs[0]
    o.check(key.public_key() == leaf.public_key(), "tls.key matches tls.crt", "the private key is not the certificate's")
    try:
        sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        sans = []
    o.check(SERVICE_DNS in sans, f"tls.crt SAN {SERVICE_DNS}", f"SANs are {sans}")
    now = datetime.datetime.now(datetime.timezone.utc)
    o.check(leaf.not_valid_before_utc <= now < leaf.not_valid_after_utc, "tls.crt valid now", f"valid {leaf.not_valid_before_utc} .. {leaf.not_valid_after_utc}")
    days = (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days
    o.check(days <= 397, "tls.crt short-lived", f"valid for {days} days")
    mwcs = [x for x in bundle if x.kind == "MutatingWebhookConfiguration" and x.name == WEBHOOK]
    ca_b64 = dig((mwcs[0].doc.get("webhooks") or [{}])[0], "clientConfig", "caBundle") if mwcs else None
    if not o.check(bool(ca_b64), "caBundle in the bundle's MutatingWebhookConfiguration", "missing: the API server could not trust this certificate"):
        return
    try:
        cas = x509.load_pem_x509_certificates(base64.b64decode(ca_b64, validate=True))
    except Exception as e:
        o.check(False, "caBundle parses", f"{type(e).__name__}: {e}")
        return
    signed = False
    for ca in cas:
        try:
            leaf.verify_directly_issued_by(ca)
            signed = True
        except Exception:
            pass
    o.check(signed, "tls.crt signed by the caBundle", "no certificate in caBundle issued it")


def check_policy(o: Obj, bundle: list[Obj]) -> None:
    if o.kind not in CLUSTER_SCOPED:
        o.check(bool(o.namespace), "namespace set", "namespaced object without metadata.namespace would land in the kubectl context's namespace")
    if o.kind in RBAC_KINDS and any(x.kind == "Deployment" and x.name == WEBHOOK for x in bundle):
        o.check(False, "no RBAC", "the webhook needs no Kubernetes API access (manifests/base/kustomization.yaml)")
    spec = pod_spec_of(o)
    if spec is not None:
        check_pod_security(o, spec)
        check_opted_in(o, bundle)
    if o.kind == "Deployment" and o.name == WEBHOOK:
        check_webhook_deployment(o, bundle)
    elif o.kind == "Service" and o.name == WEBHOOK:
        check_webhook_service(o, bundle)
    elif o.kind == "PodDisruptionBudget":
        check_pdb(o, bundle)
    elif o.kind == "MutatingWebhookConfiguration" and o.name == WEBHOOK:
        check_webhook_config(o, bundle)
    elif o.kind == "ServiceAccount":
        check_service_account(o)
    elif o.kind == "Secret" and o.name == TLS_SECRET:
        check_tls_secret(o, bundle)
    elif o.kind == "ServiceMonitor":
        sel = dig(o.doc, "spec", "selector", "matchLabels") or {}
        svcs = [x for x in bundle if x.kind == "Service" and x.namespace == o.namespace and sel and all((dig(x.doc, "metadata", "labels") or {}).get(k) == v for k, v in sel.items())]
        ports = {p.get("name") for x in svcs for p in dig(x.doc, "spec", "ports") or []}
        o.check(len(svcs) == 1 and svcs[0].name == WEBHOOK, "ServiceMonitor selects the webhook Service", f"selects {[x.name for x in svcs]}")
        o.check(all(ep.get("port") in ports for ep in dig(o.doc, "spec", "endpoints") or []), "ServiceMonitor endpoints name Service ports", f"Service ports are {sorted(p for p in ports if p)}")


# --------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kubernetes-validate", required=True, help="path of the kubernetes-validate CLI")
    ap.add_argument("-k", "--kubernetes-version", action="append", required=True)
    ap.add_argument("--release-namespace", help="a Helm rendering installed into this existing namespace")
    ap.add_argument("bundles", nargs="+", metavar="LABEL=FILE")
    args = ap.parse_args()
    if args.release_namespace:
        use_release_namespace(args.release_namespace)

    bundles: dict[str, list[Obj]] = {}
    for spec in args.bundles:
        label, _, path = spec.partition("=")
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
        if not docs:
            print(f"FAIL {label}: rendered no objects")
            return 1
        bundles[label] = [Obj(label, d) for d in docs]
    objs = [o for b in bundles.values() for o in b]

    for o in objs:
        if not isinstance(o.doc, dict) or "apiVersion" not in o.doc or "kind" not in o.doc:
            o.failures.append("not a Kubernetes object (apiVersion and kind required)")
    run_kubernetes_validate(args.kubernetes_validate, args.kubernetes_version, objs)
    for o in objs:
        hand = CRD_CHECKS.get((o.api_version, o.kind))
        if hand is not None:
            before = len(o.results)
            hand(o)
            o.results.insert(before, f"{o.api_version} {o.kind} checked by hand")
    for label, b in bundles.items():
        for o in b:
            check_policy(o, b)

    passed = failed = 0
    for o in objs:
        how = o.results[0] if o.results else "no checks"
        n_policy = len(o.results) - 1
        if o.failures:
            failed += 1
            print(f"FAIL {o.label:<26} {o.ident():<60} " + " | ".join(o.failures))
        else:
            passed += 1
            print(f"ok   {o.label:<26} {o.ident():<60} {how}; +{n_policy} checks")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
