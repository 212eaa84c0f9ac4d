{{/*
Values the monitor cannot run with, refused with the value to change: (the root context).
*/}}
{{- define "mlops.monitor.validate" -}}
{{- $monitor := .Values.monitor }}
{{- if and $monitor.retraining.enabled (not .Values.trainer.retrain.enabled) }}
{{- fail (printf "monitor.retraining.enabled needs trainer.retrain.enabled: the monitor starts retraining as a Job copied from the trainer's retrain CronJob (%s), which the chart renders only then. Set trainer.retrain.enabled=true, with trainer.retrain.suspend=true to keep the CronJob without a schedule (retraining only when the monitor asks), or set monitor.retraining.enabled=false" (include "mlops.trainer.retrainCronJobName" .)) }}
{{- end }}
{{- range $name, $value := dict "MONITOR_METRICS_PORT" "metricsPort" "MONITOR_WINDOW_S" "windowSeconds" "RETRAIN_MODE" "retraining.enabled" "RETRAIN_CRONJOB" "retraining.enabled (the CronJob is the trainer's)" "RETRAIN_NAMESPACE" "retraining.enabled (the Role is in the release's namespace)" }}
{{- if hasKey $monitor.settings $name }}
{{- fail (printf "monitor.settings.%s: set monitor.%s instead (the chart derives ports, probes, the NetworkPolicy, the Role and the service-account token from it)" $name $value) }}
{{- end }}
{{- end }}
{{- end }}
