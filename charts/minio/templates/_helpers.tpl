{{/* Resource name: <release>-minio, predictable so sibling charts can reference it. */}}
{{- define "minio.fullname" -}}
{{- .Values.fullnameOverride | default (printf "%s-%s" .Release.Name .Chart.Name) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "minio.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: object-storage
{{- end }}

{{- define "minio.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{ include "minio.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mlops
{{- end }}

{{/* The bucket Job's pods must not match the Service's selector. */}}
{{- define "minio.bucketsLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: bucket-provisioning
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mlops
{{- end }}

{{- define "minio.secretName" -}}
{{- .Values.auth.existingSecret | default (include "minio.fullname" .) }}
{{- end }}

{{/* Image reference; call with (dict "image" <image values> "global" .Values.global "path" "<values path>"). */}}
{{- define "minio.image" -}}
{{- $registry := required (printf "%s.registry (or global.imageRegistry) is required" .path) (.image.registry | default (.global).imageRegistry) -}}
{{- if .image.digest }}{{ printf "%s/%s@%s" $registry .image.repository .image.digest }}
{{- else }}{{ printf "%s/%s:%s" $registry .image.repository (required (printf "%s.tag is required" .path) .image.tag) }}
{{- end }}
{{- end }}


{{/* The bucket Job's MinIO URL with URL-escaped credentials (urlquery; a space as %20, which URL parsers decode). */}}
{{- define "minio.clientUrl" -}}
{{- $escape := dict "user" (urlquery .Values.auth.rootUser | replace "+" "%20") "password" (urlquery .Values.auth.rootPassword | replace "+" "%20") }}
{{- printf "http://%s:%s@%s:%v" $escape.user $escape.password (include "minio.fullname" .) .Values.service.port }}
{{- end }}
