{{/*
Building blocks of the NetworkPolicies. The policies allow exactly the data flow:
  feature pipeline -> S3, Redis          trainer -> S3, MLflow           model sync -> MLflow
  BFF -> Triton, Redis, RabbitMQ, S3 (Feast registry)                    log worker -> RabbitMQ, S3
  MLflow -> PostgreSQL, S3               clients -> BFF                  Prometheus -> metrics ports
  monitor -> S3, MLflow, and the Kubernetes API server when it starts retraining (networkPolicy.kubernetesApiTo)
  batch scoring -> S3, Triton (gRPC)
  with jobs on demand (jobs.enabled): BFF -> jobs database; job worker -> RabbitMQ, jobs database, the
  Kubernetes API server; the jobs' pods (label mlops.platform/job-reporter) -> jobs database
plus DNS for every client. A backing service replaced by an external endpoint has no pods to select:
its clients may then reach its port anywhere (the endpoint's address is outside the cluster's view).
*/}}

{{/* Pod selector of a platform component: (dict "ctx" $ "component" "bff"). */}}
{{- define "mlops.networkPolicy.componentPeer" -}}
podSelector:
  matchLabels:
    {{- include "mlops.selectorLabels" . | nindent 4 }}
{{- end }}

{{/* Pod selector of a subchart's pods: (dict "ctx" $ "chart" "minio" "component" "object-storage"). */}}
{{- define "mlops.networkPolicy.subchartPeer" -}}
podSelector:
  matchLabels:
    app.kubernetes.io/name: {{ .chart }}
    app.kubernetes.io/instance: {{ .ctx.Release.Name }}
    {{- with .component }}
    app.kubernetes.io/component: {{ . }}
    {{- end }}
{{- end }}

{{/* Where each backing service is: the subchart's pods and port, or the external endpoint's port. */}}
{{- define "mlops.networkPolicy.backend" -}}
{{- $v := .ctx.Values }}
{{- if eq .name "s3" }}
{{- if $v.minio.enabled }}{chart: minio, component: object-storage, port: {{ $v.minio.service.port }}}
{{- else }}{port: {{ include "mlops.urlPort" ($v.externalS3.endpoint | default "https://s3.amazonaws.com") }}}{{ end }}
{{- else if eq .name "redis" }}
{{- if $v.redis.enabled }}{chart: redis, component: online-store, port: {{ $v.redis.service.port }}}
{{- else }}{port: {{ $v.externalRedis.port }}}{{ end }}
{{- else if eq .name "rabbitmq" }}
{{- if $v.rabbitmq.enabled }}{chart: rabbitmq, component: message-broker, port: {{ $v.rabbitmq.service.port }}}
{{- else }}{port: {{ $v.externalRabbitmq.port }}}{{ end }}
{{- else if eq .name "mlflow" }}
{{- if $v.mlflow.enabled }}{chart: mlflow, component: model-registry, port: {{ $v.mlflow.service.port }}}
{{- else }}{port: {{ include "mlops.urlPort" $v.externalMlflow.trackingUri }}}{{ end }}
{{- else if eq .name "postgresql" }}
{{- if $v.postgresql.enabled }}{chart: postgresql, component: database, port: {{ $v.postgresql.service.port }}}
{{- else }}{port: {{ $v.mlflow.backendStore.port }}}{{ end }}
{{- else if eq .name "jobs-database" }}
{{- if $v.postgresql.enabled }}{chart: postgresql, component: database, port: {{ $v.postgresql.service.port }}}
{{- else }}{port: {{ $v.jobs.database.port }}}{{ end }}
{{- else }}
{{- fail (printf "unknown backing service %q" .name) }}
{{- end }}
{{- end }}

{{/* Egress rules to DNS and the named backing services: (dict "ctx" $ "to" (list "s3" "redis")). */}}
{{- define "mlops.networkPolicy.egress" -}}
{{- $ctx := .ctx -}}
- to:
    {{- toYaml $ctx.Values.networkPolicy.dnsTo | nindent 4 }}
  ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
{{- range .to }}
{{- $backend := include "mlops.networkPolicy.backend" (dict "ctx" $ctx "name" .) | fromYaml }}
{{- if $backend.chart }}
- to:
    - {{ include "mlops.networkPolicy.subchartPeer" (dict "ctx" $ctx "chart" $backend.chart "component" $backend.component) | nindent 6 | trim }}
  ports:
{{- else }}
- ports:
{{- end }}
    - {port: {{ $backend.port }}, protocol: TCP}
{{- end }}
{{- end }}

{{/* Common metadata of a policy: (dict "ctx" $ "name" "bff" "component" "bff"). */}}
{{- define "mlops.networkPolicy.metadata" -}}
metadata:
  name: {{ printf "%s-%s" (include "mlops.fullname" .ctx) .name | trunc 63 | trimSuffix "-" }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "mlops.labels" (dict "ctx" .ctx "component" "network-policy") | nindent 4 }}
{{- end }}
