{{/* Pod spec of the trainer, shared by the Job and the retraining CronJob: (dict "ctx" $). */}}
{{- define "mlops.trainer.podSpec" -}}
{{- $values := .ctx.Values.trainer }}
{{- include "mlops.podDefaults" (dict "ctx" .ctx "values" $values) }}
restartPolicy: Never
containers:
  - name: trainer
    image: {{ include "mlops.image" (dict "image" $values.image "ctx" .ctx "path" "trainer.image") }}
    imagePullPolicy: {{ $values.image.pullPolicy }}
    command: [python, -m, trainer]
    {{- with $values.args }}
    args:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    env:
      {{- include "mlops.env" (dict "ctx" .ctx "blocks" (list "platform" "s3" "data" "feast" "mlflow") "settings" $values.settings) | nindent 6 }}
    resources:
      {{- toYaml $values.resources | nindent 6 }}
    securityContext:
      {{- toYaml .ctx.Values.platform.containerSecurityContext | nindent 6 }}
    volumeMounts:
      {{- include "mlops.tmpVolumeMount" . | nindent 6 }}
volumes:
  {{- include "mlops.tmpVolume" . | nindent 2 }}
{{- end }}
