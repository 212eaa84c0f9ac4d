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
