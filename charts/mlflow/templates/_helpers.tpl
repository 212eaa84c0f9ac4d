{{/* Resource name: <release>-mlflow, predictable so sibling charts can reference it. */}}
{{- define "mlflow.fullname" -}}
{{- .Values.fullnameOverride | default (printf "%s-%s" .Release.Name .Chart.Name) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mlflow.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: model-registry
{{- end }}

{{- define "mlflow.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{ include "mlflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mlops
{{- end }}

{{/* Image reference; call with (dict "image" <image values> "global" .Values.global "path" "<values path>"). */}}
{{- define "mlflow.image" -}}
{{- $registry := required (printf "%s.registry (or global.imageRegistry) is required" .path) (.image.registry | default (.global).imageRegistry) -}}
{{- if .image.digest }}{{ printf "%s/%s@%s" $registry .image.repository .image.digest }}
{{- else }}{{ printf "%s/%s:%s" $registry .image.repository (required (printf "%s.tag (or global.platformImageTag) is required" .path) (.image.tag | default (.global).platformImageTag)) }}
{{- end }}
{{- end }}


{{/* Host headers the server accepts: its Service under every DNS form, localhost (probes, port-forward) and extras. */}}
{{- define "mlflow.allowedHosts" -}}
{{- $name := include "mlflow.fullname" . }}
{{- $hosts := list "localhost" "127.0.0.1" $name (printf "%s.%s" $name .Release.Namespace) (printf "%s.%s.svc" $name .Release.Namespace) (printf "%s.%s.svc.cluster.local" $name .Release.Namespace) }}
{{- $withPorts := list }}
{{- range $hosts }}
{{- $withPorts = concat $withPorts (list . (printf "%s:%v" . $.Values.service.port)) }}
{{- end }}
{{- concat $withPorts .Values.allowedHosts | join "," }}
{{- end }}

{{/* The server's ServiceAccount. */}}
{{- define "mlflow.serviceAccountName" -}}
{{- tpl .Values.serviceAccount.name . | default (include "mlflow.fullname" .) }}
{{- end }}

{{/*
The backend store's URI without a password (libpq reads PGPASSWORD): user and database URL-escaped, so
no character of theirs can change where it points.
*/}}
{{- define "mlflow.backendStoreUri" -}}
{{- $backend := .Values.backendStore }}
{{- /* urlquery writes a space as "+", which URI parsers (libpq, SQLAlchemy) keep as "+": "%20" instead. */}}
{{- printf "postgresql://%s@%s:%v/%s" (urlquery $backend.username | replace "+" "%20") (tpl $backend.host .) $backend.port (urlquery $backend.database | replace "+" "%20") }}
{{- end }}

{{/* Env of whatever talks to the backend store: the password from its Secret. */}}
{{- define "mlflow.backendStoreEnv" -}}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ required "mlflow.backendStore.existingSecret is required" (tpl .Values.backendStore.existingSecret .) }}
      key: password
{{- end }}

{{/* Pod-level settings shared by the server and the migration Job. */}}
{{- define "mlflow.podDefaults" -}}
serviceAccountName: {{ include "mlflow.serviceAccountName" . }}
automountServiceAccountToken: false
{{- with .Values.global.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
