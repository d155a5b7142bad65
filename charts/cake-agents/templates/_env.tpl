{{/*
Environment of the agent container. Every name here must be one the agent understands
(agent/app/config.go, app.EnvVars()); test/chart checks that in both directions.
*/}}
{{- define "cake-agents.env" -}}
{{- $cp := .Values.controlPlane }}
{{- $mode := include "cake-agents.databaseMode" . }}
{{- $replicas := int (include "cake-agents.replicas" .) }}
- name: AGENT_HTTP_ADDR
  value: ":8080"
- name: AGENT_HTTPS_ADDR
  value: ":8443"
{{- if $cp.tlsSecretName }}
- name: AGENT_TLS_CERT_FILE
  value: /etc/cake-agents/tls/tls.crt
- name: AGENT_TLS_KEY_FILE
  value: /etc/cake-agents/tls/tls.key
{{- end }}
- name: AGENT_SERVING_CA_CONFIGMAP
  value: {{ include "cake-agents.servingCAConfigMap" . | quote }}
- name: AGENT_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: AGENT_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: AGENT_RELEASE
  value: {{ .Release.Name | quote }}
- name: AGENT_CHART_VERSION
  value: {{ .Chart.Version | quote }}
{{- if $cp.host }}
- name: AGENT_EXTERNAL_URL
  value: {{ printf "%s://%s" $cp.externalScheme $cp.host | quote }}
{{- end }}
{{- if $cp.sessionWeb.enabled }}
- name: AGENT_SESSION_WEB_DOMAIN
  value: {{ include "cake-agents.sessionWebDomain" . | quote }}
{{- end }}
- name: AGENT_LOG_FORMAT
  value: {{ $cp.logFormat | quote }}
- name: AGENT_LOG_LEVEL
  value: {{ $cp.logLevel | quote }}
{{- with $cp.kubeAPI }}
{{- if .qps }}
- name: AGENT_KUBE_API_QPS
  value: {{ .qps | quote }}
{{- end }}
{{- if .burst }}
- name: AGENT_KUBE_API_BURST
  value: {{ .burst | quote }}
{{- end }}
{{- end }}
{{- if $cp.debugAddr }}
- name: AGENT_DEBUG_ADDR
  value: {{ $cp.debugAddr | quote }}
{{- end }}
{{- /* Database */}}
{{- if eq $mode "sqlite" }}
- name: DATABASE_URL
  value: "sqlite:///data/agents.db"
{{- else if eq $mode "postgresql" }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "cake-agents.postgresql.fullname" . }}
      key: DATABASE_URL
{{- else }}
{{- $ext := .Values.externalDatabase }}
{{- if $ext.existingSecret }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $ext.existingSecret | quote }}
      key: {{ $ext.existingSecretKey | quote }}
      {{- if $ext.existingSecretEnv }}
      {{- /* With PG* variables the Secret may hold no URL at all: pgx then takes everything from them. */}}
      optional: true
      {{- end }}
{{- else if .Values.externalSecrets.enabled }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "cake-agents.externalSecrets.targetName" . | quote }}
      key: DATABASE_URL
{{- else }}
{{- /* Only PG* variables: an empty postgres:// URL makes pgx take everything from them. */}}
- name: DATABASE_URL
  value: "postgres://"
{{- end }}
{{- range $name, $ref := $ext.existingSecretEnv }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      {{- if kindIs "string" $ref }}
      {{- if not $ext.existingSecret }}
      {{- fail (printf "externalDatabase.existingSecretEnv.%s names only a key: set externalDatabase.existingSecret, or give {secret: NAME, key: KEY}" $name) }}
      {{- end }}
      name: {{ $ext.existingSecret | quote }}
      key: {{ $ref | quote }}
      {{- else }}
      name: {{ $ref.secret | default $ext.existingSecret | required (printf "externalDatabase.existingSecretEnv.%s.secret (or externalDatabase.existingSecret) is required" $name) | quote }}
      key: {{ $ref.key | required (printf "externalDatabase.existingSecretEnv.%s.key is required" $name) | quote }}
      {{- end }}
{{- end }}
{{- end }}
{{- /* Auth */}}
{{- $auth := include "cake-agents.secretName" (dict "secret" .Values.betterAuth.secret "suffix" "auth" "root" .) }}
{{- if $auth }}
- name: AGENT_AUTH_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $auth | quote }}
      key: {{ .Values.betterAuth.secret.key | quote }}
      {{- if eq $mode "sqlite" }}
      optional: true
      {{- end }}
{{- end }}
- name: AGENT_ADMIN_GROUPS
  value: {{ join "," $cp.adminGroups | quote }}
{{- with $cp.tokenAudiences }}
- name: AGENT_TOKEN_AUDIENCES
  value: {{ join "," . | quote }}
{{- end }}
- name: AGENT_TOKEN_DEFAULT_TTL
  value: {{ .Values.tokens.defaultTTL | toString | quote }}
- name: AGENT_TOKEN_MAX_TTL
  value: {{ .Values.tokens.maxTTL | toString | quote }}
{{- $ha := .Values.headerAuth }}
- name: AGENT_HEADER_AUTH_ENABLED
  value: {{ $ha.enabled | quote }}
{{- if $ha.enabled }}
- name: AGENT_HEADER_AUTH_EMAIL_HEADER
  value: {{ $ha.email.header | quote }}
- name: AGENT_HEADER_AUTH_EMAIL_CLAIM
  value: {{ $ha.email.claim | quote }}
- name: AGENT_HEADER_AUTH_USER_HEADER
  value: {{ $ha.user.header | quote }}
- name: AGENT_HEADER_AUTH_JWT_HEADER
  value: {{ $ha.jwt.header | quote }}
- name: AGENT_HEADER_AUTH_GROUPS
  value: {{ join "," $ha.groups | quote }}
{{- with include "cake-agents.trustedProxyCIDRs" . }}
- name: AGENT_TRUSTED_PROXY_CIDRS
  value: {{ . | quote }}
{{- end }}
{{- with $ha.jwksURL }}
- name: AGENT_JWKS_URL
  value: {{ . | quote }}
{{- end }}
{{- if and (or $ha.jwt.issuer $ha.jwt.audience) (not $ha.jwksURL) }}
{{- fail "headerAuth.jwt.issuer and headerAuth.jwt.audience need headerAuth.jwksURL: the claims of an unverified JWT prove nothing" }}
{{- end }}
{{- with $ha.jwt.issuer }}
- name: AGENT_HEADER_AUTH_JWT_ISSUER
  value: {{ . | quote }}
{{- end }}
{{- with $ha.jwt.audience }}
- name: AGENT_HEADER_AUTH_JWT_AUDIENCE
  value: {{ . | quote }}
{{- end }}
{{- end }}
- name: AGENT_LEADER_ELECTION
  value: {{ gt $replicas 1 | quote }}
{{- if gt $replicas 1 }}
- name: AGENT_LEASE_NAME
  value: {{ printf "%s-reconciler" (include "cake-agents.fullname" .) | quote }}
{{- with $cp.leaderElection }}
- name: AGENT_LEASE_DURATION
  value: {{ .leaseDuration | toString | quote }}
- name: AGENT_LEASE_RENEW_DEADLINE
  value: {{ .renewDeadline | toString | quote }}
- name: AGENT_LEASE_RETRY_PERIOD
  value: {{ .retryPeriod | toString | quote }}
{{- end }}
{{- end }}
{{- /* Sessions */}}
{{- $s := .Values.sessions }}
- name: AGENT_SESSION_NAMESPACE
  value: {{ include "cake-agents.sessionNamespace" . | quote }}
- name: AGENT_DATA_PLANE_IMAGE
  value: {{ include "cake-agents.image" (dict "image" .Values.dataPlane.image "root" . "project" true) | quote }}
- name: AGENT_DATA_PLANE_INIT_IMAGE
  value: {{ include "cake-agents.image" (dict "image" .Values.dataPlaneInit.image "root" . "project" true) | quote }}
- name: AGENT_IMAGE_PULL_POLICY
  value: {{ .Values.dataPlane.image.pullPolicy | quote }}
{{- with .Values.imagePullSecrets }}
- name: AGENT_IMAGE_PULL_SECRETS
  value: {{ join "," . | quote }}
{{- end }}
{{- with dig "requests" "cpu" "" $s.resources }}
- name: AGENT_SESSION_CPU_REQUEST
  value: {{ . | toString | quote }}
{{- end }}
{{- with dig "requests" "memory" "" $s.resources }}
- name: AGENT_SESSION_MEMORY_REQUEST
  value: {{ . | toString | quote }}
{{- end }}
{{- with dig "limits" "cpu" "" $s.resources }}
- name: AGENT_SESSION_CPU_LIMIT
  value: {{ . | toString | quote }}
{{- end }}
{{- with dig "limits" "memory" "" $s.resources }}
- name: AGENT_SESSION_MEMORY_LIMIT
  value: {{ . | toString | quote }}
{{- end }}
{{- with $s.nodeSelector }}
- name: AGENT_SESSION_NODE_SELECTOR
  value: {{ $pairs := list }}{{ range $k, $v := . }}{{ $pairs = append $pairs (printf "%s=%s" $k $v) }}{{ end }}{{ join "," $pairs | quote }}
{{- end }}
{{- with $s.tolerations }}
- name: AGENT_SESSION_TOLERATIONS
  value: {{ toJson . | quote }}
{{- end }}
{{- with $s.storage.storageClassName }}
- name: AGENT_SESSION_STORAGE_CLASS
  value: {{ . | quote }}
{{- end }}
- name: AGENT_SESSION_STORAGE_SIZE
  value: {{ $s.storage.size | quote }}
{{- with $s.caBundle.configMapName }}
- name: AGENT_SESSION_CA_CONFIGMAP
  value: {{ . | quote }}
- name: AGENT_SESSION_CA_KEY
  value: {{ $s.caBundle.key | required "sessions.caBundle.key is required with sessions.caBundle.configMapName: the ConfigMap key holding the PEM bundle" | quote }}
{{- end }}
- name: AGENT_SESSION_IDLE_TIMEOUT
  value: {{ $s.idleTimeout | toString | quote }}
- name: AGENT_SESSION_TTL
  value: {{ $s.ttl | toString | quote }}
- name: AGENT_SESSION_MAX_IDLE_TIMEOUT
  value: {{ $s.maxIdleTimeout | default "0" | toString | quote }}
- name: AGENT_SESSION_MAX_TTL
  value: {{ $s.maxTTL | default "0" | toString | quote }}
- name: AGENT_TRANSCRIPT_RETENTION
  value: {{ $s.transcriptRetention | default "720h" | toString | quote }}
- name: AGENT_MAX_ACTIVE_SESSIONS
  value: {{ $s.maxActivePerUser | toString | quote }}
- name: AGENT_WARM_POOL_SIZE
  value: {{ $s.warmPool.size | toString | quote }}
- name: AGENT_RECONCILE_INTERVAL
  value: {{ $s.reconcileInterval | toString | quote }}
- name: AGENT_DEFAULT_MODEL
  value: {{ $s.defaultModel | quote }}
{{- with $s.providerJSON }}
- name: AGENT_PROVIDER_JSON
  value: {{ . | quote }}
{{- end }}
{{- with .Values.github.oauth.clientId }}
- name: AGENT_GITHUB_CLIENT_ID
  value: {{ . | quote }}
{{- end }}
{{- if or .Values.github.oauth.clientId .Values.github.app.id }}
- name: AGENT_GITHUB_URL
  value: {{ .Values.github.url | quote }}
{{- with .Values.github.apiURL }}
- name: AGENT_GITHUB_API_URL
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- if .Values.github.app.id }}
{{- if not .Values.github.app.privateKey.existingSecret }}
{{- fail "github.app.id needs github.app.privateKey.existingSecret: the Secret holding the App's private key (the .pem GitHub generated)" }}
{{- end }}
- name: AGENT_GITHUB_APP_ID
  value: {{ .Values.github.app.id | int64 | quote }}
- name: AGENT_GITHUB_APP_PRIVATE_KEY_FILE
  value: /etc/cake-agents/github-app/private-key.pem
{{- with .Values.github.app.installationId }}
- name: AGENT_GITHUB_APP_INSTALLATION_ID
  value: {{ . | int64 | quote }}
{{- end }}
{{- end }}
{{- if include "cake-agents.providersSecret" . }}
- name: AGENT_PROVIDERS_FILE
  value: /etc/cake-agents/providers-seed/providers.json
{{- end }}
{{- /* Integrations: optional, so a missing Secret does not keep the agent from starting. */}}
{{- with .Values.litellm.baseURL }}
- name: LITELLM_BASE_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.litellm.budget }}
- name: LITELLM_SESSION_BUDGET
  value: {{ .perSession | default 0 | toString | quote }}
- name: LITELLM_USER_BUDGET
  value: {{ .perUser | default 0 | toString | quote }}
- name: LITELLM_BUDGET_PERIOD
  value: {{ .period | default "0" | toString | quote }}
{{- end }}
- name: LITELLM_KEY_DURATION
  value: {{ .Values.litellm.keyDuration | default "0" | toString | quote }}
{{- with include "cake-agents.secretName" (dict "secret" .Values.litellm.secret "suffix" "litellm" "root" .) }}
- name: LITELLM_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: {{ $.Values.litellm.secret.apiKeyKey | quote }}
      optional: true
{{- end }}
{{- with include "cake-agents.secretName" (dict "secret" .Values.linear.secret "suffix" "linear" "root" .) }}
- name: LINEAR_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: {{ $.Values.linear.secret.apiKeyKey | quote }}
      optional: true
- name: LINEAR_WEBHOOK_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: {{ $.Values.linear.secret.webhookSecretKey | quote }}
      optional: true
{{- end }}
{{- if .Values.linear.enabled }}
{{- if not (include "cake-agents.secretName" (dict "secret" .Values.linear.secret "suffix" "linear" "root" .)) }}
{{- fail "linear.enabled needs linear.secret: secret.create=true with apiKey and webhookSecret, or secret.name of an existing Secret" }}
{{- end }}
- name: AGENT_LINEAR_ENABLED
  value: "true"
- name: LINEAR_API_URL
  value: {{ .Values.linear.apiURL | quote }}
{{- with .Values.linear.label }}
- name: LINEAR_LABEL
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- with include "cake-agents.secretName" (dict "secret" .Values.slack.secret "suffix" "slack" "root" .) }}
- name: SLACK_BOT_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: {{ $.Values.slack.secret.botTokenKey | quote }}
      optional: true
- name: SLACK_SIGNING_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ . | quote }}
      key: {{ $.Values.slack.secret.signingSecretKey | quote }}
      optional: true
{{- end }}
{{- if .Values.slack.enabled }}
{{- if not (include "cake-agents.secretName" (dict "secret" .Values.slack.secret "suffix" "slack" "root" .)) }}
{{- fail "slack.enabled needs slack.secret: secret.create=true with botToken and signingSecret, or secret.name of an existing Secret" }}
{{- end }}
- name: AGENT_SLACK_ENABLED
  value: "true"
- name: AGENT_SLACK_API_URL
  value: {{ .Values.slack.apiURL | quote }}
{{- end }}
{{- end }}
