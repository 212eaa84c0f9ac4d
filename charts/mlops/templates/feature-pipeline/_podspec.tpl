{{/* Pod spec of the feature pipeline: (dict "ctx" $ "command" "run" ["bootstrap" <featurePipeline.bootstrap>]),
shared by the Job (which bootstraps the raw data first) and the CronJob. */}}
{{- define "mlops.featurePipeline.podSpec" -}}
{{- $values := .ctx.Values.featurePipeline }}
{{- include "mlops.podDefaults" (dict "ctx" .ctx "values" $values) }}
restartPolicy: Never
{{- with .bootstrap }}
# Before the first ingestion: the raw CSVs into the raw bucket, unless they are there (featurePipeline.bootstrap).
initContainers:
  - name: data-bootstrap
    image: {{ include "mlops.image" (dict "image" $values.image "ctx" $.ctx "path" "featurePipeline.image") }}
    imagePullPolicy: {{ $values.image.pullPolicy }}
    command: [python, -m, feature_store, bootstrap]
    args:
      - --source={{ .source }}
      {{- if eq .source "synthetic" }}
      - --applicants={{ .applicants | int64 }}
      {{- end }}
      {{- if eq .source "url" }}
      - --url={{ required "featurePipeline.bootstrap.url is required with source url" .url }}
      {{- end }}
    env:
      {{- include "mlops.env" (dict "ctx" $.ctx "blocks" (list "platform" "s3" "data" "feast") "settings" $values.settings) | nindent 6 }}
    resources:
      {{- toYaml $values.resources | nindent 6 }}
    securityContext:
      {{- toYaml $.ctx.Values.platform.containerSecurityContext | nindent 6 }}
    volumeMounts:
      {{- include "mlops.tmpVolumeMount" . | nindent 6 }}
{{- end }}
containers:
  - name: feature-pipeline
    image: {{ include "mlops.image" (dict "image" $values.image "ctx" .ctx "path" "featurePipeline.image") }}
    imagePullPolicy: {{ $values.image.pullPolicy }}
    command: [python, -m, feature_store, {{ .command }}]
    {{- with .runId }}
    # Recorded when the run completed: the trainer Job waits for it.
    args: [--run-id={{ . }}]
    {{- end }}
    env:
      {{- include "mlops.env" (dict "ctx" .ctx "blocks" (list "platform" "s3" "data" "feast") "settings" $values.settings) | nindent 6 }}
    resources:
      {{- toYaml $values.resources | nindent 6 }}
    securityContext:
      {{- toYaml .ctx.Values.platform.containerSecurityContext | nindent 6 }}
    volumeMounts:
      {{- include "mlops.tmpVolumeMount" . | nindent 6 }}
volumes:
  {{- include "mlops.tmpVolume" . | nindent 2 }}
{{- end }}
