{{/*
Jobs on demand (jobs.enabled): the BFF's jobs API records each job in the jobs database (JOBS_DATABASE_URL) and
queues it on RabbitMQ (JOBS_QUEUE); the job worker runs it as a Job made from a suspended CronJob (batch scoring,
or the trainer's on-demand one), whose pod reports its progress and result into the job's row.
*/}}

{{/* Values jobs cannot run with, refused with the value to change: (the root context). */}}
{{- define "mlops.jobs.validate" -}}
{{- if .Values.jobs.enabled }}
{{- if not .Values.bff.apiKeys.required }}
{{- fail "jobs.enabled needs bff.apiKeys.required (and bff.apiKeys.existingSecret): the jobs API starts scoring and training runs in the cluster, up to the largest training profile's resources, and must not be open to whoever reaches the BFF" }}
{{- end }}
{{- if not .Values.batchScoring.enabled }}
{{- fail "jobs.enabled needs batchScoring.enabled: scoring jobs are Jobs made from the batch-scoring CronJob (JOB_TEMPLATE_SCORE)" }}
{{- end }}
{{- $_ := include "mlops.jobs.databaseSecretName" . }}
{{- end }}
{{- end }}

{{/* Whether the chart makes the jobs database's URL Secret: the in-cluster PostgreSQL with its chart-made password. */}}
{{- define "mlops.jobs.chartMadeDatabaseSecret" -}}
{{- if and .Values.postgresql.enabled (not .Values.postgresql.auth.existingSecret) (not .Values.jobs.database.existingSecret) }}true{{ end }}
{{- end }}

{{/* The Secret holding the jobs database's URL (key jobs.database.urlKey). */}}
{{- define "mlops.jobs.databaseSecretName" -}}
{{- if .Values.jobs.database.existingSecret }}
{{- .Values.jobs.database.existingSecret }}
{{- else if include "mlops.jobs.chartMadeDatabaseSecret" . }}
{{- printf "%s-jobs-database" (include "mlops.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- else if .Values.postgresql.enabled }}
{{- fail (printf "jobs.database.existingSecret is required with postgresql.auth.existingSecret: a Secret whose key %q holds postgresql://<user>:<password>@%s:%v/%s (user and password URL-escaped), the database the chart creates on the in-cluster PostgreSQL" .Values.jobs.database.urlKey (include "mlops.subchartFullname" (dict "ctx" . "chart" "postgresql")) .Values.postgresql.service.port .Values.jobs.database.name) }}
{{- else }}
{{- fail (printf "jobs.database.existingSecret is required with postgresql.enabled false: a Secret whose key %q holds the libpq URL of the jobs' database on your managed PostgreSQL (postgresql://<user>:<password>@<host>:%v/<database>, which must exist)" .Values.jobs.database.urlKey .Values.jobs.database.port) }}
{{- end }}
{{- end }}

{{/*
The URL of the jobs database on the in-cluster PostgreSQL, as the chart-made Secret holds it: its user (the
owner of MLflow's database, who creates this one) and chart-made password, URL-escaped, so no character of
theirs can change where it points.
*/}}
{{- define "mlops.jobs.databaseUrl" -}}
{{- $auth := .Values.postgresql.auth }}
{{- /* urlquery writes a space as "+", which libpq keeps as "+": "%20" instead. */}}
{{- printf "postgresql://%s:%s@%s:%v/%s" (urlquery $auth.username | replace "+" "%20") (urlquery $auth.password | replace "+" "%20") (include "mlops.subchartFullname" (dict "ctx" . "chart" "postgresql")) .Values.postgresql.service.port .Values.jobs.database.name }}
{{- end }}

{{/* The label of the pods that report into a job's row (the Job templates' pods): the jobs database lets them in. */}}
{{- define "mlops.jobs.reporterLabel" -}}
mlops.platform/job-reporter: "true"
{{- end }}

{{/* The training profiles file, mounted into the BFF from a ConfigMap (TRAINING_PROFILES_FILE). */}}
{{- define "mlops.jobs.profilesConfigMapName" -}}{{ printf "%s-training-profiles" (include "mlops.fullname" .) | trunc 63 | trimSuffix "-" }}{{- end }}
{{- define "mlops.jobs.profilesDir" -}}/etc/mlops/training-profiles{{- end }}

{{/* Environment blocks of mlops.env (see _helpers.tpl): the jobs database, the queue, the worker's own. */}}
{{- define "mlops.env.jobsDatabase" -}}
JOBS_DATABASE_URL: {valueFrom: {secretKeyRef: {name: {{ include "mlops.jobs.databaseSecretName" . }}, key: {{ .Values.jobs.database.urlKey }}}}}
{{- end }}

{{- define "mlops.env.jobs" -}}
{{ include "mlops.env.jobsDatabase" . }}
JOBS_QUEUE: {value: {{ .Values.jobs.queue | quote }}}
{{- end }}

{{- define "mlops.env.jobWorker" -}}
{{- $worker := .Values.jobWorker }}
# The worker runs each attempt as a Job from these CronJobs, in its own namespace (its Role's).
JOB_RUNNER: {value: kubernetes}
JOB_NAMESPACE: {valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
JOB_TEMPLATE_SCORE: {value: {{ include "mlops.batchScoring.fullname" . | quote }}}
JOB_TEMPLATE_TRAIN: {value: {{ include "mlops.trainer.onDemandCronJobName" . | quote }}}
JOB_MAX_ATTEMPTS: {value: {{ $worker.maxAttempts | int64 | quote }}}
JOB_RETRY_DELAY_S: {value: {{ include "mlops.number" $worker.retryDelaySeconds | quote }}}
JOB_TIMEOUT_S: {value: {{ include "mlops.number" $worker.timeoutSeconds | quote }}}
JOB_WORKER_METRICS_PORT: {value: {{ $worker.metricsPort | int64 | quote }}}
# The local runner's logs; unused by the kubernetes runner, set since the default is a developer's path.
JOB_LOG_DIR: {value: /tmp/jobs}
{{- end }}

{{/*
Settings the chart derives for jobs, refused in a component's `settings`: (dict "settings" .Values.bff.settings
"path" "bff.settings").
*/}}
{{- define "mlops.jobs.refuseDerivedSettings" -}}
{{- include "mlops.refuseDerivedSettings" (dict "settings" .settings "path" .path "derived" (dict
      "JOBS_DATABASE_URL" "jobs.database.existingSecret"
      "JOBS_QUEUE" "jobs.queue"
      "TRAINING_PROFILES_FILE" "jobs.enabled (the chart mounts the training profiles)")) }}
{{- end }}
