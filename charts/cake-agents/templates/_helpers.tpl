{{/*
Expand the name of the chart.
*/}}
{{- define "cake-agents.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name, truncated at 63 characters (some Kubernetes name
fields are limited to this by the DNS naming spec). If the release name contains the chart
name it is used as the full name.
*/}}
{{- define "cake-agents.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Create chart name and version as used by the chart label.
*/}}
{{- define "cake-agents.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "cake-agents.labels" -}}
helm.sh/chart: {{ include "cake-agents.chart" . }}
{{ include "cake-agents.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels. The name is fixed to "cake-agents" (not nameOverride): the kubectl plugin
finds the agent by app.kubernetes.io/name=cake-agents and app.kubernetes.io/component.
*/}}
{{- define "cake-agents.selectorLabels" -}}
app.kubernetes.io/name: cake-agents
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Selector labels of the agent (control plane) pods.
*/}}
{{- define "cake-agents.controlPlaneSelectorLabels" -}}
{{ include "cake-agents.selectorLabels" . }}
app.kubernetes.io/component: control-plane
{{- end }}

{{/*
Labels the agent puts on session pods (pkg/api/v1): selected by the NetworkPolicy.
*/}}
{{- define "cake-agents.sessionSelectorLabels" -}}
app.kubernetes.io/name: cake-agents-session
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Name of the agent's ServiceAccount.
*/}}
{{- define "cake-agents.serviceAccountName" -}}
{{- if .Values.controlPlane.serviceAccount.create }}
{{- default (include "cake-agents.fullname" .) .Values.controlPlane.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.controlPlane.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Namespace of session pods.
*/}}
{{- define "cake-agents.sessionNamespace" -}}
{{- default .Release.Namespace .Values.sessionNamespace.name }}
{{- end }}

{{/*
Image reference: {{ include "cake-agents.image" (dict "image" .Values.x.image "root" $) }}.
registry.default is prefixed when the repository names no registry (for the project's own images,
"project" true, registry.project when registry.default is empty); the tag defaults to the
chart's appVersion (override with "defaultTag"); a digest wins over the tag.
*/}}
{{- define "cake-agents.image" -}}
{{- $repo := .image.repository }}
{{- $first := first (splitList "/" $repo) }}
{{- $hasRegistry := and (gt (len (splitList "/" $repo)) 1) (or (contains "." $first) (contains ":" $first) (eq "localhost" $first)) }}
{{- $registry := trimSuffix "/" (.root.Values.registry.default | default "") }}
{{- if and (not $registry) .project }}
{{- $registry = trimSuffix "/" (.root.Values.registry.project | default "") }}
{{- end }}
{{- if and $registry (not $hasRegistry) }}
{{- $repo = printf "%s/%s" $registry $repo }}
{{- end }}
{{- if .image.digest }}
{{- printf "%s@%s" $repo .image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (toString (.image.tag | default .defaultTag | default .root.Chart.AppVersion)) }}
{{- end }}
{{- end }}

{{/*
Database mode: "external" (a Secret with the URL or PG* variables, or one written by an
ExternalSecret), "postgresql" (the in-chart StatefulSet) or "sqlite".
*/}}
{{- define "cake-agents.databaseMode" -}}
{{- $ext := .Values.externalDatabase }}
{{- if or $ext.existingSecret $ext.existingSecretEnv .Values.externalSecrets.enabled }}
{{- if .Values.postgresql.enabled }}
{{- fail "postgresql.enabled=true conflicts with externalDatabase.existingSecret/existingSecretEnv and externalSecrets.enabled: choose one database" }}
{{- end }}
{{- "external" }}
{{- else if .Values.postgresql.enabled }}
{{- "postgresql" }}
{{- else }}
{{- "sqlite" }}
{{- end }}
{{- end }}

{{/*
Replicas of the agent: always 1 with SQLite.
*/}}
{{- define "cake-agents.replicas" -}}
{{- if eq (include "cake-agents.databaseMode" .) "sqlite" }}1{{ else }}{{ .Values.controlPlane.replicas }}{{ end }}
{{- end }}

{{- define "cake-agents.postgresql.fullname" -}}
{{- printf "%s-postgresql" (include "cake-agents.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "cake-agents.externalSecrets.targetName" -}}
{{- default (printf "%s-database" (include "cake-agents.fullname" .)) .Values.externalSecrets.targetSecretName }}
{{- end }}

{{/*
Name of an integration Secret: {{ include "cake-agents.secretName" (dict "secret" .Values.linear.secret "suffix" "linear" "root" $) }}.
Empty when the integration is off.
*/}}
{{- define "cake-agents.secretName" -}}
{{- if .secret.name }}
{{- .secret.name }}
{{- else if .secret.create }}
{{- printf "%s-%s" (include "cake-agents.fullname" .root) .suffix | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
Name of the ConfigMap where the agent publishes its serving CA. Fixed: the plugin reads it
by this name (pkg/api/v1.AgentCertMapName).
*/}}
{{- define "cake-agents.servingCAConfigMap" -}}
cake-agents-serving-ca
{{- end }}

{{/*
Random value kept across upgrades: {{ include "cake-agents.keepOrRandom" (dict "name" "x" "key" "k" "length" 48 "root" $) }}
reads the existing Secret's key with lookup (empty under `helm template`) and generates a new
value only when there is none.
*/}}
{{- define "cake-agents.keepOrRandom" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .name }}
{{- if and $existing $existing.data (hasKey $existing.data .key) }}
{{- index $existing.data .key | b64dec }}
{{- else }}
{{- randAlphaNum (int .length) }}
{{- end }}
{{- end }}

{{/*
The namespace of an in-cluster model gateway named by litellm.baseURL as a Service:
<service>.<namespace>.svc[.<cluster domain>]. Empty for anything else (a public host, or the
ambiguous <service>.<namespace>, which networkPolicy.sessions.egressTo covers).
*/}}
{{- define "cake-agents.modelGatewayNamespace" -}}
{{- with .Values.litellm.baseURL }}
{{- $host := (urlParse .).host | splitList ":" | first }}
{{- $labels := splitList "." $host }}
{{- if and (ge (len $labels) 3) (eq (index $labels 2) "svc") }}
{{- index $labels 1 }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The networks the agent believes identity headers from, comma-separated: headerAuth.trustedProxyCIDRs,
plus, with istio.enabled, the address the agent's Istio sidecar delivers every inbound request
from (Envoy's inbound passthrough bind address, 127.0.0.6, and ::6 on IPv6). Never loopback
proper: port-forwarded connections arrive on 127.0.0.1 and must stay untrusted.
*/}}
{{- define "cake-agents.trustedProxyCIDRs" -}}
{{- $cidrs := .Values.headerAuth.trustedProxyCIDRs | default list }}
{{- if .Values.istio.enabled }}
{{- $cidrs = concat $cidrs (list "127.0.0.6/32" "::6/128") }}
{{- end }}
{{- $cidrs | uniq | join "," }}
{{- end }}

{{/*
The model providers given in values (providers without existingSecret/existingSecretKey),
as a dict by provider id.
*/}}
{{- define "cake-agents.providersMap" -}}
{{- toJson (omit .Values.providers "existingSecret" "existingSecretKey") }}
{{- end }}

{{/*
Name of the Secret holding the providers the agent seeds from: existingSecret, the one the
chart renders from values, or empty when no provider is given.
*/}}
{{- define "cake-agents.providersSecret" -}}
{{- if .Values.providers.existingSecret }}
{{- .Values.providers.existingSecret }}
{{- else if gt (len (fromJson (include "cake-agents.providersMap" .))) 0 }}
{{- printf "%s-providers" (include "cake-agents.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
Parent domain of the session hosts (controlPlane.sessionWeb): its domain, else
controlPlane.host, which the agent's links need anyway.
*/}}
{{- define "cake-agents.sessionWebDomain" -}}
{{- $cp := .Values.controlPlane -}}
{{- $host := required "controlPlane.host is required with controlPlane.sessionWeb.enabled: session hosts link back to the web UI there" $cp.host -}}
{{- $cp.sessionWeb.domain | default $host | trimSuffix "." | lower -}}
{{- end }}
