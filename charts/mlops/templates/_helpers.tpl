{{/* Names and labels, in the style of kube-prometheus-stack and argo-helm. */}}
{{- define "mlops.name" -}}
{{- .Values.nameOverride | default .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mlops.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := .Values.nameOverride | default .Chart.Name }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "mlops.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Per-component names: call with the root context. */}}
{{- define "mlops.featurePipeline.fullname" -}}{{ printf "%s-feature-pipeline" (include "mlops.fullname" .) | trunc 63 | trimSuffix "-" }}{{- end }}
{{- define "mlops.trainer.fullname" -}}{{ printf "%s-trainer" (include "mlops.fullname" .) | trunc 63 | trimSuffix "-" }}{{- end }}
{{- define "mlops.triton.fullname" -}}{{ printf "%s-triton" (include "mlops.fullname" .) | trunc 63 | trimSuffix "-" }}{{- end }}
{{- define "mlops.modelSync.fullname" -}}{{ printf "%s-model-sync" (include "mlops.fullname" .) | trunc 63 | trimSuffix "-" }}{{- end }}
{{- define "mlops.bff.fullname" -}}{{ printf "%s-bff" (include "mlops.fullname" .) | trunc 63 | trimSuffix "-" }}{{- end }}
{{- define "mlops.logWorker.fullname" -}}{{ printf "%s-log-worker" (include "mlops.fullname" .) | trunc 63 | trimSuffix "-" }}{{- end }}
{{- define "mlops.monitor.fullname" -}}{{ printf "%s-monitor" (include "mlops.fullname" .) | trunc 63 | trimSuffix "-" }}{{- end }}
{{- define "mlops.jobWorker.fullname" -}}{{ printf "%s-job-worker" (include "mlops.fullname" .) | trunc 63 | trimSuffix "-" }}{{- end }}
{{- /* 52 characters at most: a CronJob's, whose controller appends 11 to name its Jobs. */}}
{{- define "mlops.batchScoring.fullname" -}}{{ printf "%s-batch-scoring" (include "mlops.fullname" .) | trunc 52 | trimSuffix "-" }}{{- end }}

{{/*
The trainer's retraining CronJob (52 characters at most: the CronJob controller appends 11 to name
its Jobs). One definition for the CronJob itself, the monitor's RETRAIN_CRONJOB and the monitor
Role's resourceNames, so the three cannot drift apart.
*/}}
{{- define "mlops.trainer.retrainCronJobName" -}}{{ printf "%s-retrain" (include "mlops.trainer.fullname" .) | trunc 52 | trimSuffix "-" }}{{- end }}

{{/*
The trainer's on-demand CronJob, the template of the training jobs the job worker runs (52 characters at
most, like every CronJob's name). One definition for the CronJob, the worker's JOB_TEMPLATE_TRAIN and its
Role's resourceNames.
*/}}
{{- define "mlops.trainer.onDemandCronJobName" -}}{{ printf "%s-on-demand" (include "mlops.trainer.fullname" .) | trunc 52 | trimSuffix "-" }}{{- end }}

{{/* Selector labels of a component: (dict "ctx" $ "component" "bff"). Selectors use only these three. */}}
{{- define "mlops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlops.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of a component's resources: (dict "ctx" $ "component" "bff"). */}}
{{- define "mlops.labels" -}}
helm.sh/chart: {{ include "mlops.chart" .ctx }}
{{ include "mlops.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: {{ include "mlops.name" .ctx }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Name of a subchart's resources (mirrors the subcharts' own helper): (dict "ctx" $ "chart" "minio"). */}}
{{- define "mlops.subchartFullname" -}}
{{- (index .ctx.Values .chart).fullnameOverride | default (printf "%s-%s" .ctx.Release.Name .chart) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Argo CD sync waves: infrastructure (wave 0, the default) -> buckets (1, set in values) -> feature
pipeline (2) -> trainer and serving (3). Argo CD applies a wave only once the previous one is healthy,
and a Job is healthy once it has completed. Serving shares the trainer's wave: on a first install
Triton's init container waits for the champion the trainer registers, and on an upgrade that retrains,
serving rolls out beside the training instead of behind it. Call with the stage name.
*/}}
{{- define "mlops.syncWave" -}}
argocd.argoproj.io/sync-wave: {{ get (dict "feature-pipeline" "2" "trainer" "3" "serving" "3") . | required (printf "unknown sync stage %q" .) | quote }}
{{- end }}

{{/*
Inputs of the one-off Jobs, as JSON: what decides what they compute, and nothing else (no image tag,
no resources). Their names carry a hash of it, so a new BFF image or platformImageTag leaves a finished
Job alone, while a new data snapshot or source, new feature definitions (files/job-inputs/, written by
tools/job_input_checksums.py from the repository) or a new training profile runs it again.
*/}}
{{- define "mlops.featurePipeline.inputs" -}}
{{- $p := .Values.platform }}
{{- toJson (dict
      "definitions" (.Files.Get "files/job-inputs/feature-pipeline.sha256" | trim | required "files/job-inputs/feature-pipeline.sha256 is missing from the chart (tools/job_input_checksums.py)")
      "dataSnapshot" .Values.featurePipeline.job.dataSnapshot
      "bootstrap" .Values.featurePipeline.bootstrap
      "raw" (list $p.buckets.raw $p.buckets.rawPrefix)
      "offline" (list $p.buckets.offline $p.buckets.offlinePrefix)
      "feast" (list $p.feast.project $p.feast.registryPath $p.feast.configFile)
      "settings" .Values.featurePipeline.settings) }}
{{- end }}

{{- define "mlops.trainer.inputs" -}}
{{- toJson (dict
      "features" (include "mlops.featurePipeline.inputs" . | sha256sum)
      "code" (.Files.Get "files/job-inputs/trainer.sha256" | trim | required "files/job-inputs/trainer.sha256 is missing from the chart (tools/job_input_checksums.py)")
      "profile" (dict "name" .Values.trainer.profile "recipe" (pick (include "mlops.trainer.profile" . | fromYaml) "hyperparameters" "holdout_fraction" "seed"))
      "args" .Values.trainer.args
      "settings" .Values.trainer.settings
      "model" .Values.platform.registeredModelName) }}
{{- end }}

{{/*
The training profile `trainer.profile` of files/training-profiles.yaml (a symlink to the trainer's own
services/trainer/profiles.yaml, which the trainer reads for `--profile`), as YAML: fails with the
profiles' names when there is none of that name. Its recipe (hyperparameters, holdout, seed) is an input
of the trainer Job; its resources, GPU and nodeSelector are the trainer pods' (values set in
trainer.resources / trainer.nodeSelector win, key by key).
*/}}
{{- define "mlops.trainer.profile" -}}
{{- $file := .Files.Get "files/training-profiles.yaml" | required "files/training-profiles.yaml is missing from the chart (a symlink to services/trainer/profiles.yaml)" }}
{{- $profiles := get (fromYaml $file) "profiles" | default dict }}
{{- $name := .Values.trainer.profile }}
{{- if not (hasKey $profiles $name) }}
{{- fail (printf "trainer.profile: no training profile %q in services/trainer/profiles.yaml; profiles: %s" $name (keys $profiles | sortAlpha | join ", ")) }}
{{- end }}
{{- toYaml (get $profiles $name) }}
{{- end }}

{{/* Id of the feature pipeline run of these inputs: the Job records it, the trainer Job waits for it. */}}
{{- define "mlops.featurePipeline.runId" -}}
{{- include "mlops.featurePipeline.inputs" . | sha256sum | trunc 16 }}
{{- end }}

{{/* A one-off Job's name: (dict "prefix" <component fullname> "inputs" <inputs JSON>). */}}
{{- define "mlops.inputsJobName" -}}
{{- printf "%s-%s" (.prefix | trunc 52 | trimSuffix "-") (.inputs | sha256sum | trunc 10) }}
{{- end }}

{{/*
Metadata of a one-off Job (feature pipeline, trainer): an Argo CD Sync hook in its stage's wave. A
named hook is created once and kept (it is not part of the application's diff, so a new image of an
unchanged Job is not applied to the immutable Job); `HookFailed` deletes a failed run, so the next
sync (Argo CD's retry, or the next commit) creates it again. Call with (dict "ctx" $ "stage" "trainer").
*/}}
{{- define "mlops.jobHookAnnotations" -}}
{{ include "mlops.syncWave" .stage }}
argocd.argoproj.io/hook: Sync
argocd.argoproj.io/hook-delete-policy: HookFailed
{{- end }}

{{/*
The pod template of a one-off Job under plain Helm: the live Job's, when it exists (Job templates
are immutable; an unchanged name means unchanged inputs, so the finished run stands), else the
rendered one. `lookup` is empty under `helm template` and Argo CD, whose hook keeps the live Job.
Call with (dict "ctx" $ "name" <Job name> "template" <rendered template YAML>).
*/}}
{{- define "mlops.jobTemplate" -}}
{{- $live := lookup "batch/v1" "Job" .ctx.Release.Namespace .name }}
{{- if $live }}
{{- toYaml $live.spec.template }}
{{- else }}
{{- .template }}
{{- end }}
{{- end }}

{{/* Image reference: (dict "image" .Values.bff.image "ctx" $ "path" "bff.image"). */}}
{{- define "mlops.image" -}}
{{- $registry := required (printf "%s.registry (or global.imageRegistry) is required" .path) (.image.registry | default .ctx.Values.global.imageRegistry) }}
{{- if .image.digest }}
{{- printf "%s/%s@%s" $registry .image.repository .image.digest }}
{{- else }}
{{- $tag := required (printf "%s.tag (or global.platformImageTag) is required" .path) (.image.tag | default .ctx.Values.global.platformImageTag) }}
{{- printf "%s/%s:%s" $registry .image.repository $tag }}
{{- end }}
{{- end }}

{{/*
Pod-level settings every platform pod shares: (dict "ctx" $ "values" .Values.bff). Optional keys:
"serviceAccountName" (default: the platform's ServiceAccount) and "kubernetesApi" (true: the pod gets
a service-account token; only the monitor with retraining on, whose Role says what it may do).
*/}}
{{- define "mlops.podDefaults" -}}
serviceAccountName: {{ .serviceAccountName | default (include "mlops.fullname" .ctx) }}
{{- if .kubernetesApi }}
# This pod calls the Kubernetes API with its ServiceAccount's Role.
automountServiceAccountToken: true
{{- else }}
# This pod never talks to the Kubernetes API.
automountServiceAccountToken: false
{{- end }}
{{- with .ctx.Values.global.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .ctx.Values.platform.podSecurityContext | nindent 2 }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if and .component .values.topologySpreadConstraints }}
{{- /* Spread a Deployment's pods: each constraint counts the pods of this component and revision
       (labelSelector and matchLabelKeys filled in unless given). */}}
topologySpreadConstraints:
  {{- range .values.topologySpreadConstraints }}
  {{- $constraint := deepCopy . }}
  {{- if not $constraint.labelSelector }}
  {{- $_ := set $constraint "labelSelector" (dict "matchLabels" (include "mlops.selectorLabels" (dict "ctx" $.ctx "component" $.component) | fromYaml)) }}
  {{- end }}
  {{- if not (hasKey $constraint "matchLabelKeys") }}
  {{- $_ := set $constraint "matchLabelKeys" (list "pod-template-hash") }}
  {{- end }}
  - {{ toYaml $constraint | nindent 4 | trim }}
  {{- end }}
{{- end }}
{{- end }}

{{/* Fewest replicas of a Deployment's values (autoscaling on: its minReplicas, else replicaCount). */}}
{{- define "mlops.minReplicas" -}}
{{- if .autoscaling.enabled }}{{ .autoscaling.minReplicas | int }}{{ else }}{{ .replicaCount | int }}{{ end }}
{{- end }}

{{/*
PodDisruptionBudget of a Deployment: (dict "ctx" $ "component" "bff" "name" <fullname> "values" .Values.bff).
Rendered only with at least 2 replicas: a budget over one pod either lets a drain evict it (an outage)
or blocks every drain. It keeps `minAvailable` pods (or all but `maxUnavailable`), which must leave
at least one pod running and at least one evictable; the chart refuses values that do not.
*/}}
{{- define "mlops.pdb" -}}
{{- $pdb := .values.podDisruptionBudget }}
{{- $min := include "mlops.minReplicas" .values | int }}
{{- if and $pdb.enabled (ge $min 2) }}
{{- $down := $pdb.maxUnavailable | toString }}
{{- if hasSuffix "%" $down }}
{{- /* A percentage of the pods, rounded up as the disruption controller does. */}}
{{- $down = div (add (mul $min (trimSuffix "%" $down | int)) 99) 100 }}
{{- end }}
{{- $keep := ternary ($pdb.minAvailable | int) (sub $min ($down | int)) (not (kindIs "invalid" $pdb.minAvailable)) | int }}
{{- if or (lt $keep 1) (ge $keep $min) }}
{{- fail (printf "%s.podDisruptionBudget keeps %d of at least %d pods: it must keep at least 1 and let at least 1 go" .component $keep $min) }}
{{- end }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ .name }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "mlops.labels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
  annotations:
    {{- include "mlops.syncWave" "serving" | nindent 4 }}
spec:
  {{- if kindIs "invalid" $pdb.minAvailable }}
  maxUnavailable: {{ $pdb.maxUnavailable }}
  {{- else }}
  minAvailable: {{ $pdb.minAvailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "mlops.selectorLabels" (dict "ctx" .ctx "component" .component) | nindent 6 }}
{{- end }}
{{- end }}

{{/* Connection details of the backing services: the in-cluster subchart or the external endpoint. */}}
{{- define "mlops.s3.endpoint" -}}
{{- if .Values.minio.enabled }}
{{- printf "http://%s:%v" (include "mlops.subchartFullname" (dict "ctx" . "chart" "minio")) .Values.minio.service.port }}
{{- else }}
{{- .Values.externalS3.endpoint }}
{{- end }}
{{- end }}

{{- define "mlops.s3.secretName" -}}
{{- if .Values.minio.enabled }}
{{- .Values.minio.auth.existingSecret | default (include "mlops.subchartFullname" (dict "ctx" . "chart" "minio")) }}
{{- else }}
{{- .Values.externalS3.existingSecret }}
{{- end }}
{{- end }}

{{- define "mlops.rabbitmq.secretName" -}}
{{- if .Values.rabbitmq.enabled }}
{{- .Values.rabbitmq.auth.existingSecret | default (include "mlops.subchartFullname" (dict "ctx" . "chart" "rabbitmq")) }}
{{- else }}
{{- required "externalRabbitmq.existingSecret is required when rabbitmq.enabled is false" .Values.externalRabbitmq.existingSecret }}
{{- end }}
{{- end }}

{{- define "mlops.redis.secretName" -}}
{{- if .Values.redis.enabled }}
{{- .Values.redis.auth.existingSecret | default (include "mlops.subchartFullname" (dict "ctx" . "chart" "redis")) }}
{{- else }}
{{- required "externalRedis.existingSecret is required when redis.enabled is false" .Values.externalRedis.existingSecret }}
{{- end }}
{{- end }}

{{- define "mlops.mlflow.trackingUri" -}}
{{- if .Values.mlflow.enabled }}
{{- printf "http://%s:%v" (include "mlops.subchartFullname" (dict "ctx" . "chart" "mlflow")) .Values.mlflow.service.port }}
{{- else }}
{{- required "externalMlflow.trackingUri is required when mlflow.enabled is false" .Values.externalMlflow.trackingUri }}
{{- end }}
{{- end }}

{{/* A number as an env value: whole numbers without exponent (2592000, not 2.592e+06), others as they are. */}}
{{- define "mlops.number" -}}
{{- if eq (float64 .) (float64 (int64 .)) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- end }}

{{/* Port of a URL: explicit, or the scheme's default. */}}
{{- define "mlops.urlPort" -}}
{{- $url := urlParse . }}
{{- $hostPort := splitList ":" $url.host }}
{{- if gt (len $hostPort) 1 }}{{ last $hostPort }}{{ else }}{{ eq $url.scheme "http" | ternary 80 443 }}{{ end }}
{{- end }}

{{/*
Environment blocks, one per settings class of services/mlops_common/settings.py. Each renders a YAML
map NAME -> EnvVar source; "mlops.env" merges the blocks a service needs with its own values and its
`settings` overrides, then renders the sorted env list. Only names the services' Settings classes
read belong here (tests/charts check that against the classes).
*/}}
{{- define "mlops.env.platform" -}}
LOG_LEVEL: {value: {{ .Values.platform.logLevel | quote }}}
LOG_FORMAT: {value: {{ .Values.platform.logFormat | quote }}}
{{- end }}

{{- define "mlops.env.s3" -}}
{{- with include "mlops.s3.endpoint" . }}
S3_ENDPOINT_URL: {value: {{ . | quote }}}
{{- end }}
AWS_DEFAULT_REGION: {value: {{ .Values.platform.s3Region | quote }}}
{{- with include "mlops.s3.secretName" . }}
AWS_ACCESS_KEY_ID: {valueFrom: {secretKeyRef: {name: {{ . }}, key: access-key-id}}}
AWS_SECRET_ACCESS_KEY: {valueFrom: {secretKeyRef: {name: {{ . }}, key: secret-access-key}}}
{{- end }}
{{- end }}

{{- define "mlops.env.data" -}}
RAW_BUCKET: {value: {{ .Values.platform.buckets.raw | quote }}}
RAW_PREFIX: {value: {{ .Values.platform.buckets.rawPrefix | quote }}}
OFFLINE_BUCKET: {value: {{ .Values.platform.buckets.offline | quote }}}
OFFLINE_PREFIX: {value: {{ .Values.platform.buckets.offlinePrefix | quote }}}
{{- end }}

{{- define "mlops.env.feast" -}}
FEAST_CONFIG_FILE: {value: {{ .Values.platform.feast.configFile | quote }}}
FEAST_PROJECT: {value: {{ .Values.platform.feast.project | quote }}}
FEAST_REGISTRY_PATH: {value: {{ .Values.platform.feast.registryPath | quote }}}
FEAST_REDIS_CONNECTION: {valueFrom: {secretKeyRef: {name: {{ include "mlops.redis.secretName" . }}, key: connection-string}}}
{{- with include "mlops.s3.endpoint" . }}
FEAST_S3_ENDPOINT_URL: {value: {{ . | quote }}}
{{- end }}
{{- end }}

{{- define "mlops.env.mlflow" -}}
MLFLOW_TRACKING_URI: {value: {{ include "mlops.mlflow.trackingUri" . | quote }}}
REGISTERED_MODEL_NAME: {value: {{ .Values.platform.registeredModelName | quote }}}
{{- end }}

{{- define "mlops.env.rabbitmq" -}}
RABBITMQ_URL: {valueFrom: {secretKeyRef: {name: {{ include "mlops.rabbitmq.secretName" . }}, key: amqp-url}}}
{{- end }}

{{- define "mlops.env.apiKeys" -}}
{{- $keys := .Values.bff.apiKeys }}
{{- if and $keys.required (not $keys.existingSecret) }}
{{- fail "bff.apiKeys.required needs bff.apiKeys.existingSecret: a Secret whose key holds the API_KEYS JSON (python -m bff.api_keys new NAME)" }}
{{- end }}
API_KEYS_REQUIRED: {value: {{ $keys.required | quote }}}
API_KEY_RATE_LIMIT_PER_S: {value: {{ include "mlops.number" $keys.rateLimitPerSecond | quote }}}
API_KEY_RATE_BURST: {value: {{ $keys.rateBurst | int64 | quote }}}
{{- with $keys.existingSecret }}
API_KEYS: {valueFrom: {secretKeyRef: {name: {{ . }}, key: {{ $keys.secretKey }}}}}
{{- end }}
{{- end }}

{{- define "mlops.env.triton" -}}
TRITON_MODEL_NAME: {value: {{ .Values.platform.tritonModelName | quote }}}
{{- end }}

{{/*
The decision rule's threshold (DECISION_THRESHOLD): one value, platform.decisionThreshold, for the BFF and the
batch-scoring job, so a batch decides as the API does. Their `settings` may not set it (mlops.refuseDerivedSettings).
*/}}
{{- define "mlops.env.decision" -}}
DECISION_THRESHOLD: {value: {{ include "mlops.number" .Values.platform.decisionThreshold | quote }}}
{{- end }}

{{/*
Settings a component's `settings` may not set because the chart derives them from other values:
(dict "settings" .Values.bff.settings "path" "bff.settings" "derived" (dict "DECISION_THRESHOLD" "platform.decisionThreshold")).
*/}}
{{- define "mlops.refuseDerivedSettings" -}}
{{- range $name, $value := .derived }}
{{- if hasKey $.settings $name }}
{{- fail (printf "%s.%s: set %s instead (the chart derives %s from it)" $.path $name $value $name) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
A container's env: (dict "ctx" $ "blocks" (list "platform" "s3") "own" (dict "BFF_PORT" "8080") "settings" .Values.bff.settings).
Later sources win: blocks, then the component's own values, then the user's `settings`.
*/}}
{{- define "mlops.env" -}}
{{- $ctx := .ctx }}
{{- $env := dict }}
{{- range .blocks }}
{{- $env = mergeOverwrite $env (include (printf "mlops.env.%s" .) $ctx | fromYaml) }}
{{- end }}
{{- range $name, $value := .own }}
{{- $_ := set $env $name (dict "value" (toString $value)) }}
{{- end }}
{{- range $name, $value := .settings }}
{{- $_ := set $env $name (dict "value" (toString $value)) }}
{{- end }}
{{- $list := list }}
{{- range $name := keys $env | sortAlpha }}
{{- $list = append $list (merge (dict "name" $name) (get $env $name)) }}
{{- end }}
{{- toYaml $list }}
{{- end }}

{{/* Volumes every platform container writes to: a read-only root filesystem needs a writable /tmp (HOME). */}}
{{- define "mlops.tmpVolumeMount" -}}
- {name: tmp, mountPath: /tmp}
{{- end }}
{{- define "mlops.tmpVolume" -}}
- name: tmp
  emptyDir: {}
{{- end }}

{{/*
KEDA ScaledObject of a Deployment (autoscaling.engine: keda): (dict "ctx" $ "component" "triton" "name" <fullname>
"values" .Values.triton "triggers" <YAML list of the component's own triggers>). Every one also scales on CPU
(the HPA's target), so a metric that goes missing never leaves the Deployment unscaled.
*/}}
{{- define "mlops.scaledObject" -}}
{{- $autoscaling := .values.autoscaling }}
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: {{ .name }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "mlops.labels" (dict "ctx" .ctx "component" .component) | nindent 4 }}
  annotations:
    {{- include "mlops.syncWave" "serving" | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ .name }}
  minReplicaCount: {{ $autoscaling.minReplicas }}
  maxReplicaCount: {{ $autoscaling.maxReplicas }}
  pollingInterval: {{ .ctx.Values.autoscaling.keda.pollingInterval }}
  cooldownPeriod: {{ .ctx.Values.autoscaling.keda.cooldownPeriod }}
  triggers:
    {{- with .triggers }}
    {{- . | nindent 4 }}
    {{- end }}
    - type: cpu
      metricType: Utilization
      metadata:
        value: {{ $autoscaling.targetCPUUtilizationPercentage | quote }}
{{- end }}

{{/*
A client's inference target of Triton, its HTTP endpoint (TRITON_HTTP_URL): (dict "ctx" $ "service"
.Values.bff.tritonService "path" "bff.tritonService"). `clusterIP`: the Service, which balances the client's
connections (retired after a minute, so new pods get some). `headless`: the headless Service's name, which
resolves to every ready Triton pod; the client sends its calls to those addresses in turn and resolves the name
again every 30 s (services/mlops_common/triton_client.py).
*/}}
{{- define "mlops.triton.inferenceTarget" -}}
{{- if eq .service "headless" }}
{{- if not .ctx.Values.triton.headlessService.enabled }}
{{- fail (printf "%s headless needs triton.headlessService.enabled" .path) }}
{{- end }}
{{- printf "%s-headless:%v" (include "mlops.triton.fullname" .ctx) .ctx.Values.triton.ports.http }}
{{- else }}
{{- include "mlops.triton.httpUrl" .ctx }}
{{- end }}
{{- end }}

{{/* Triton's HTTP endpoint through its Service (TRITON_HTTP_URL). */}}
{{- define "mlops.triton.httpUrl" -}}
{{- printf "%s:%v" (include "mlops.triton.fullname" .) .Values.triton.ports.http }}
{{- end }}

{{/* Where the batch-scoring job writes (its --output): s3://<batchScoring.output.bucket, else the inference-log bucket>/<prefix>. */}}
{{- define "mlops.batchScoring.output" -}}
{{- printf "s3://%s/%s" (.Values.batchScoring.output.bucket | default .Values.platform.buckets.inferenceLogs) .Values.batchScoring.output.prefix }}
{{- end }}

{{/* The BFF's inference target of Triton (bff.tritonService). */}}
{{- define "mlops.bff.tritonTarget" -}}
{{- include "mlops.triton.inferenceTarget" (dict "ctx" . "service" .Values.bff.tritonService "path" "bff.tritonService") }}
{{- end }}
