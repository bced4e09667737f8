#!/usr/bin/env python3
"""The Helm chart with default values renders what the kustomize install renders.

    chart_parity.py KUSTOMIZE.yaml HELM.yaml

KUSTOMIZE.yaml is `kubectl kustomize manifests/cert-manager` (the base plus cert-manager),
HELM.yaml is `helm template` of charts/rds-iam-injector with default values into
rds-iam-system. Every object kustomize renders must exist in the Helm rendering with the
same kind, name and namespace, and be equal field by field, with these exceptions only:

- the Namespace: helm installs into an existing namespace (`--create-namespace`), so the
  chart has none;
- metadata.labels and the pod template's labels: Helm's must contain kustomize's (the chart
  adds app.kubernetes.io/instance, version, managed-by and helm.sh/chart);
- the webhook container's env: every kustomize variable with the same value; the chart sets
  every `serve` flag, so it may add variables, each listed in CHART_ONLY_ENV with the value
  the binary would use without it.

Prints one line per object, then "N passed, M failed"; exits 1 on any difference.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

CHART_ONLY_ENV = {
    "RDS_IAM_WEBHOOK_DRAIN_TIMEOUT": "20s",
    "RDS_IAM_WEBHOOK_DEFAULT_REGION": "",
    "RDS_IAM_WEBHOOK_HEADER_TIMEOUT": "10s",
    "RDS_IAM_WEBHOOK_BODY_TIMEOUT": "30s",
    "RDS_IAM_WEBHOOK_IDLE_TIMEOUT": "60s",
    "RDS_IAM_WEBHOOK_MAX_CONNECTIONS": "1000",
    "RDS_IAM_WEBHOOK_MAX_BUFFERED_BYTES": "32Mi",
    "RDS_IAM_WEBHOOK_H2_MAX_CONCURRENT_STREAMS": "16",
}
NOT_IN_CHART = {("Namespace", "rds-iam-system")}


def load(path: str) -> dict[tuple[str, str, str], dict]:
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    return {
        (d["kind"], (d.get("metadata") or {}).get("namespace") or "", d["metadata"]["name"]): d
        for d in docs
    }


def diff(a: Any, b: Any, path: str, out: list[str]) -> None:
    """Differences between kustomize's `a` and Helm's `b`, as 'path: a != b' lines."""
    if path.endswith(".labels") and isinstance(a, dict) and isinstance(b, dict):
        for k, v in a.items():
            if b.get(k) != v:
                out.append(f"{path}.{k}: {v!r} != {b.get(k)!r}")
        return
    if path.endswith(".env") and isinstance(a, list) and isinstance(b, list):
        ea = {e["name"]: e.get("value") for e in a}
        eb = {e["name"]: e.get("value") for e in b}
        for k, v in ea.items():
            if eb.get(k) != v:
                out.append(f"{path}[{k}]: {v!r} != {eb.get(k)!r}")
        for k in set(eb) - set(ea):
            if k not in CHART_ONLY_ENV:
                out.append(f"{path}[{k}]: only in the chart, and not a known serve default")
            elif eb[k] != CHART_ONLY_ENV[k]:
                out.append(f"{path}[{k}]: {eb[k]!r}, but the binary's default is {CHART_ONLY_ENV[k]!r}")
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in b:
                out.append(f"{path}.{k}: missing from the chart")
            elif k not in a and k == "labels":
                continue  # the chart labels everything; kustomize's cert-manager overlay does not
            elif k not in a:
                out.append(f"{path}.{k}: only in the chart ({b[k]!r})")
            else:
                diff(a[k], b[k], f"{path}.{k}", out)
        return
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            diff(x, y, f"{path}[{i}]", out)
        return
    if a != b:
        out.append(f"{path}: {a!r} != {b!r}")


def main() -> int:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    kust, helm = load(sys.argv[1]), load(sys.argv[2])
    passed = failed = 0
    for key, k in sorted(kust.items()):
        ident = f"{key[0]} {key[1] + '/' if key[1] else ''}{key[2]}"
        if (key[0], key[2]) in NOT_IN_CHART:
            h = helm.get(key)
            if h is None:
                print(f"ok   parity {ident}: not in the chart (helm installs into an existing namespace)")
                passed += 1
            else:
                print(f"FAIL parity {ident}: the chart renders it, so `helm install --create-namespace` would conflict")
                failed += 1
            continue
        h = helm.get(key)
        if h is None:
            print(f"FAIL parity {ident}: missing from the chart")
            failed += 1
            continue
        out: list[str] = []
        diff(k, h, "", out)
        if out:
            print(f"FAIL parity {ident}: " + " | ".join(out))
            failed += 1
        else:
            print(f"ok   parity {ident}: equal to kustomize's")
            passed += 1
    for key in sorted(set(helm) - set(kust)):
        print(f"FAIL parity {key[0]} {key[2]}: only in the chart")
        failed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
