{{/* Names: <fullname>-<component>, at most 63 characters. */}}
{{- define "cartage.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cartage.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* dict root, component */}}
{{- define "cartage.selectorLabels" -}}
app.kubernetes.io/name: {{ include "cartage.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "cartage.labels" -}}
{{ include "cartage.selectorLabels" . }}
app.kubernetes.io/part-of: cartage
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Every pod of the release (the default-deny policy selects these). */}}
{{- define "cartage.releaseSelector" -}}
app.kubernetes.io/name: {{ include "cartage.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "cartage.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ $tag }}
{{- end -}}
{{- end -}}

{{/* A workload's values: `defaults` overridden by its own entry. dict root, values */}}
{{- define "cartage.merge" -}}
{{- toYaml (mergeOverwrite (deepCopy .root.Values.defaults) (deepCopy .values)) -}}
{{- end -}}

{{- define "cartage.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "cartage.securityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* dict root, component */}}
{{- define "cartage.topologySpread" -}}
{{- $t := .root.Values.topologySpread -}}
{{- if $t.enabled -}}
topologySpreadConstraints:
  - maxSkew: {{ $t.maxSkew }}
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: {{ $t.zone }}
    labelSelector:
      matchLabels:
        {{- include "cartage.selectorLabels" . | nindent 8 }}
  - maxSkew: {{ $t.maxSkew }}
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: {{ $t.host }}
    labelSelector:
      matchLabels:
        {{- include "cartage.selectorLabels" . | nindent 8 }}
{{- end }}
{{- end -}}

{{/* The env every Python component shares: the database by Secret reference, NATS. */}}
{{- define "cartage.commonEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.databaseUrl.name }}
      key: {{ .Values.secrets.databaseUrl.key }}
- name: NATS_URL
  value: {{ .Values.nats.url | quote }}
- name: LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: MIGRATE_ON_START
  value: "false"
{{- end -}}

{{/* A workload's own env and secretEnv. dict root, c */}}
{{- define "cartage.extraEnv" -}}
{{- range $name, $value := .c.env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- range $name, $ref := .c.secretEnv }}
{{- $secret := index $.root.Values.secrets $ref }}
{{- if not $secret }}
{{- fail (printf "secretEnv %s: %q is not one of the `secrets` references (%s)" $name $ref (keys $.root.Values.secrets | sortAlpha | join ", ")) }}
{{- end }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret.name }}
      key: {{ $secret.key }}
{{- end }}
{{- end -}}

{{/* NetworkPolicy egress rules every Python component needs: DNS and Postgres. */}}
{{- define "cartage.egressDnsPostgres" -}}
- to: {{- toYaml .Values.networkPolicy.dns.to | nindent 4 }}
  ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
- to: {{- toYaml .Values.networkPolicy.postgres.to | nindent 4 }}
  ports:
    - {protocol: TCP, port: {{ .Values.networkPolicy.postgres.port }}}
{{- end -}}

{{/* A peer that selects one component of this release. dict root, component */}}
{{- define "cartage.peer" -}}
- podSelector:
    matchLabels:
      {{- include "cartage.selectorLabels" . | nindent 6 }}
{{- end -}}
