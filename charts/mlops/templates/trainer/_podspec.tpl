{{/*
What a trainer pod of a training profile gets, as YAML {resources, nodeSelector}: the profile's resources, GPU
and nodeSelector, with whatever trainer.resources / trainer.nodeSelector set on top. (dict "ctx" $ "profile"
<the profile's map>). The Job and the CronJobs use it for trainer.profile; the on-demand CronJob also carries
it for every profile (annotation mlops.platform/training-profiles, read by the job worker).
*/}}
{{- define "mlops.trainer.podShape" -}}
{{- $values := .ctx.Values.trainer }}
{{- $resources := deepCopy .profile.resources }}
{{- with .profile.gpu }}
{{- $_ := set $resources.limits "nvidia.com/gpu" .count }}
{{- end }}
{{- $resources = mustMergeOverwrite $resources (deepCopy $values.resources) }}
{{- $nodeSelector := mustMergeOverwrite (deepCopy (.profile.nodeSelector | default dict)) (deepCopy $values.nodeSelector) }}
{{- toYaml (dict "resources" $resources "nodeSelector" $nodeSelector) }}
{{- end }}

{{/*
Pod spec of the trainer, shared by the Job, the retraining CronJob and the on-demand CronJob:
(dict "ctx" $ ["waitForRun" <run id>] ["envBlocks" <more mlops.env blocks>]).
*/}}
{{- define "mlops.trainer.podSpec" -}}
{{- $values := .ctx.Values.trainer }}
{{- range $values.args }}
{{- if hasPrefix "--profile" . }}
{{- fail (printf "trainer.args: %q; set trainer.profile instead (it also gives the pod the profile's resources)" .) }}
{{- end }}
{{- end }}
{{- $shape := include "mlops.trainer.podShape" (dict "ctx" .ctx "profile" (include "mlops.trainer.profile" .ctx | fromYaml)) | fromYaml }}
{{- $resources := $shape.resources }}
{{- include "mlops.podDefaults" (dict "ctx" .ctx "values" (merge (dict "nodeSelector" $shape.nodeSelector) $values)) }}
restartPolicy: Never
{{- with .waitForRun }}
{{- $pipeline := $.ctx.Values.featurePipeline }}
# The features of this very run first (feature_store.runs): without Argo CD's waves (plain Helm) every Job
# starts at once, and the trainer would otherwise use up its retries while ingestion runs.
initContainers:
  - name: wait-for-features
    image: {{ include "mlops.image" (dict "image" $pipeline.image "ctx" $.ctx "path" "featurePipeline.image") }}
    imagePullPolicy: {{ $pipeline.image.pullPolicy }}
    command: [python, -m, feature_store, wait-run]
    args: [--run-id={{ . }}, --timeout={{ $pipeline.job.activeDeadlineSeconds }}]
    env:
      {{- include "mlops.env" (dict "ctx" $.ctx "blocks" (list "platform" "s3" "data" "feast") "settings" $pipeline.settings) | nindent 6 }}
    resources:
      requests: {cpu: 10m, memory: 128Mi}
      limits: {cpu: 200m, memory: 512Mi}
    securityContext:
      {{- toYaml $.ctx.Values.platform.containerSecurityContext | nindent 6 }}
    volumeMounts:
      {{- include "mlops.tmpVolumeMount" . | nindent 6 }}
{{- end }}
containers:
  - name: trainer
    image: {{ include "mlops.image" (dict "image" $values.image "ctx" .ctx "path" "trainer.image") }}
    imagePullPolicy: {{ $values.image.pullPolicy }}
    command: [python, -m, trainer]
    args:
      - --profile={{ $values.profile }}
      {{- with $values.args }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    env:
      {{- include "mlops.env" (dict "ctx" .ctx "blocks" (concat (list "platform" "s3" "data" "feast" "mlflow") (.envBlocks | default list)) "settings" $values.settings) | nindent 6 }}
    resources:
      {{- toYaml $resources | nindent 6 }}
    securityContext:
      {{- toYaml .ctx.Values.platform.containerSecurityContext | nindent 6 }}
    volumeMounts:
      {{- include "mlops.tmpVolumeMount" . | nindent 6 }}
volumes:
  {{- include "mlops.tmpVolume" . | nindent 2 }}
{{- end }}
