{{/* Labels on every object. */}}
{{- define "rds-iam.labels" -}}
app.kubernetes.io/name: rds-iam-webhook
app.kubernetes.io/component: webhook
app.kubernetes.io/part-of: rds-iam-injector
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The webhook pods' selector (the same as the kustomize base's). */}}
{{- define "rds-iam.selector" -}}
app.kubernetes.io/name: rds-iam-webhook
app.kubernetes.io/component: webhook
{{- end -}}

{{/* repository[:tag][@digest] */}}
{{- define "rds-iam.image" -}}
{{- $tag := .image.tag | default .appVersion -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Name of the Secret holding tls.crt and tls.key. */}}
{{- define "rds-iam.tlsSecret" -}}
{{- .Values.tls.existingSecret | default (printf "%s-tls" .Values.name) -}}
{{- end -}}

{{/* Fails the render unless exactly one certificate source is configured. */}}
{{- define "rds-iam.checkCerts" -}}
{{- $t := .Values.tls -}}
{{- $files := or $t.crt $t.key -}}
{{- if .Values.certManager.enabled -}}
{{- if or $files $t.existingSecret $t.caBundle -}}
{{- fail "certManager.enabled is true, so cert-manager makes the certificates: leave tls.* empty, or set certManager.enabled=false to use your own" -}}
{{- end -}}
{{- else -}}
{{- if and $files $t.existingSecret -}}
{{- fail "tls.existingSecret and tls.crt/tls.key are both set: give the files (--set-file tls.crt=certs/out/tls.crt --set-file tls.key=certs/out/tls.key) or the Secret's name, not both" -}}
{{- end -}}
{{- if not (or $files $t.existingSecret) -}}
{{- fail "certManager.enabled is false, so the chart needs a certificate: run `rds-iam-webhook certs --namespace <release namespace>` and pass --set-file tls.crt=certs/out/tls.crt --set-file tls.key=certs/out/tls.key --set-file tls.caBundle=certs/out/ca.crt, or set tls.existingSecret and tls.caBundle" -}}
{{- end -}}
{{- if and $files (not (and $t.crt $t.key)) -}}
{{- fail "tls.crt and tls.key go together: pass both with --set-file (certs/out/tls.crt, certs/out/tls.key)" -}}
{{- end -}}
{{- if not $t.caBundle -}}
{{- fail "tls.caBundle is empty: the API server needs the CA that signed the serving certificate; pass --set-file tls.caBundle=certs/out/ca.crt" -}}
{{- end -}}
{{- if not (contains "BEGIN CERTIFICATE" $t.caBundle) -}}
{{- fail "tls.caBundle is not a PEM certificate: pass the file itself with --set-file tls.caBundle=certs/out/ca.crt (not base64)" -}}
{{- end -}}
{{- end -}}
{{- end -}}
