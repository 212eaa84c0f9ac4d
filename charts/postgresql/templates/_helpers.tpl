{{/* Resource name: <release>-postgresql, predictable so sibling charts can reference it. */}}
{{- define "postgresql.fullname" -}}
{{- .Values.fullnameOverride | default (printf "%s-%s" .Release.Name .Chart.Name) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "postgresql.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: database
{{- end }}

{{- define "postgresql.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{ include "postgresql.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mlops
{{- end }}

{{- define "postgresql.secretName" -}}
{{- .Values.auth.existingSecret | default (include "postgresql.fullname" .) }}
{{- end }}

{{/* Image reference; call with (dict "image" <image values> "global" .Values.global "path" "<values path>"). */}}
{{- define "postgresql.image" -}}
{{- $registry := required (printf "%s.registry (or global.imageRegistry) is required" .path) (.image.registry | default (.global).imageRegistry) -}}
{{- if .image.digest }}{{ printf "%s/%s@%s" $registry .image.repository .image.digest }}
{{- else }}{{ printf "%s/%s:%s" $registry .image.repository (required (printf "%s.tag is required" .path) .image.tag) }}
{{- end }}
{{- end }}

