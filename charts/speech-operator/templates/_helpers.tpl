{{/* Chart name, truncated to 63 characters. */}}
{{- define "speech-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Fully qualified app name. */}}
{{- define "speech-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "speech-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "speech-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "speech-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "speech-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: speech-operator
{{- include "speech-operator.commonLabels" . }}
{{- end -}}

{{/* commonLabels (values.schema.json keeps them off the keys the chart sets), each on a line of its own. */}}
{{- define "speech-operator.commonLabels" -}}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end -}}
{{- end -}}

{{/* A pod template's labels besides its selector's and component: commonLabels, and podLabels over them (YAML, or
nothing). */}}
{{- define "speech-operator.podLabels" -}}
{{- with merge (deepCopy (.Values.podLabels | default dict)) (.Values.commonLabels | default dict) -}}
{{- toYaml . -}}
{{- end -}}
{{- end -}}

{{/*
The name of a cluster-scoped object (ClusterRole, ClusterRoleBinding) of the name given: that name and the release
namespace, so that releases of one name in two namespaces own different objects (with the name alone the second
`helm install` failed: the object "exists and cannot be imported into the current release"). Past 63 characters,
cut to 54 and followed by 8 hex characters of the untruncated name's sha256, so it stays unique.
Argument: a dict of the name ("name") and the root context ("ctx").
*/}}
{{- define "speech-operator.clusterName" -}}
{{- $full := printf "%s-%s" .name .ctx.Release.Namespace -}}
{{- if gt (len $full) 63 -}}
{{- printf "%s-%s" ($full | trunc 54 | trimSuffix "-") ($full | sha256sum | trunc 8) -}}
{{- else -}}
{{- $full -}}
{{- end -}}
{{- end -}}

{{- define "speech-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "speech-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
Namespaces watched in namespaced mode: watch.namespaces (the release namespace when empty), and
the release namespace whenever the release creates SpeechToTexts (recognizers), as they live there.
*/}}
{{- define "speech-operator.watchNamespaces" -}}
{{- $namespaces := .Values.watch.namespaces | default (list .Release.Namespace) -}}
{{- if and .Values.recognizers (not (has .Release.Namespace $namespaces)) -}}
{{- $namespaces = append $namespaces .Release.Namespace -}}
{{- end -}}
{{- toJson $namespaces -}}
{{- end -}}

{{/* The name of a SpeechToText of values.recognizers: its `name`, else its locale in lower case (en-US: en-us). */}}
{{- define "speech-operator.recognizerName" -}}
{{- .name | default (lower .locale) -}}
{{- end -}}

{{/*
RBAC rules read from deploy/base/rbac.yaml (files/rbac.yaml is its generated copy, so the rules
exist once): the rules of the ClusterRole named .role in that file, as YAML.
*/}}
{{- define "speech-operator.rulesOf" -}}
{{- $raw := .ctx.Files.Get "files/rbac.yaml" -}}
{{- if not $raw -}}
{{- fail "files/rbac.yaml (a copy of deploy/base/rbac.yaml) is missing or empty" -}}
{{- end -}}
{{- $rules := list -}}
{{- range $doc := regexSplit "(?m)^---\\s*$" $raw -1 -}}
{{- $obj := fromYaml $doc -}}
{{- if and $obj (eq (get $obj "kind" | default "") "ClusterRole") (eq (get ($obj.metadata | default dict) "name" | default "") $.role) -}}
{{- $rules = concat $rules ($obj.rules | default list) -}}
{{- end -}}
{{- end -}}
{{- if not $rules -}}
{{- fail (printf "files/rbac.yaml holds no ClusterRole %s with rules" .role) -}}
{{- end -}}
{{- toYaml $rules -}}
{{- end -}}

{{/* The operator's RBAC rules. */}}
{{- define "speech-operator.rules" -}}
{{- include "speech-operator.rulesOf" (dict "ctx" . "role" "speech-operator") -}}
{{- end -}}

{{/* The gateway's RBAC rules. */}}
{{- define "speech-operator.gatewayRules" -}}
{{- include "speech-operator.rulesOf" (dict "ctx" . "role" "speech-gateway") -}}
{{- end -}}

{{/* The gateway's name: its Deployment, Service, ServiceAccount and RBAC objects. */}}
{{- define "speech-operator.gatewayName" -}}
{{- printf "%s-gateway" (include "speech-operator.fullname" . | trunc 55 | trimSuffix "-") -}}
{{- end -}}

{{- define "speech-operator.gatewaySelectorLabels" -}}
app.kubernetes.io/name: speech-gateway
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "speech-operator.gatewayLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "speech-operator.gatewaySelectorLabels" . }}
app.kubernetes.io/component: gateway
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: speech-operator
{{- include "speech-operator.commonLabels" . }}
{{- end -}}

{{/*
The pods' and containers' securityContext: podSecurityContext and securityContext, without runAsUser, runAsGroup and
fsGroup when podIdentity is platform (the platform assigns them: OpenShift's restricted-v2 SCC refuses others).
*/}}
{{- define "speech-operator.podSecurityContext" -}}
{{- if eq .Values.podIdentity "platform" -}}
{{- toYaml (omit .Values.podSecurityContext "runAsUser" "runAsGroup" "fsGroup") -}}
{{- else -}}
{{- toYaml .Values.podSecurityContext -}}
{{- end -}}
{{- end -}}

{{- define "speech-operator.securityContext" -}}
{{- if eq .Values.podIdentity "platform" -}}
{{- toYaml (omit .Values.securityContext "runAsUser" "runAsGroup") -}}
{{- else -}}
{{- toYaml .Values.securityContext -}}
{{- end -}}
{{- end -}}

{{/*
A value values.schema.json types a number, as its environment variable's text. helm's --set passes a decimal (2.5)
as a string, which the schema takes when it is one (its "pattern") but cannot bound: such a string is bounded here,
by the schema's bounds (tests/ship/test_chart.py checks they are the same), and written as a values file's 2.5 is.
Argument: a dict of the value's name, the value, its minimum and its maximum (if it has one).
*/}}
{{- define "speech-operator.number" -}}
{{- $number := .value -}}
{{- if kindIs "string" .value -}}
{{- $number = float64 .value -}}
{{- if lt $number (float64 .minimum) -}}
{{- fail (printf "%s must be at least %v, not %s" .name .minimum .value) -}}
{{- end -}}
{{- if and (hasKey . "maximum") (gt $number (float64 (.maximum | default 0))) -}}
{{- fail (printf "%s must be at most %v, not %s" .name .maximum .value) -}}
{{- end -}}
{{- end -}}
{{- $number -}}
{{- end -}}
