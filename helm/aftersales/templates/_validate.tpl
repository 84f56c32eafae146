{{/*
Checks that fail `helm install` / `helm template` (not a pod) when a value the services would refuse at
start-up is missing. values.schema.json says the same for `helm lint`; these give the clearer message.
*/}}
{{- define "aftersales.validate" -}}
{{- if not (include "aftersales.isDevelopment" .) -}}
{{- $env := .Values.environment -}}
{{- if not (or .Values.apiTokens.existingSecret .Values.apiTokens.json) -}}
{{- fail (printf "apiTokens.json or apiTokens.existingSecret is required outside development (environment %s)" $env) -}}
{{- end -}}
{{- if not .Values.survey.linkBaseUrl -}}
{{- fail (printf "survey.linkBaseUrl is required outside development (environment %s): the customer-facing prefix of survey links" $env) -}}
{{- end -}}
{{- if not (or .Values.survey.existingSecret .Values.survey.signingKey) -}}
{{- fail (printf "survey.signingKey or survey.existingSecret (key SURVEY_SIGNING_KEY) is required outside development (environment %s)" $env) -}}
{{- end -}}
{{- if not (or .Values.customerIdKey.existingSecret .Values.customerIdKey.value) -}}
{{- fail (printf "customerIdKey.value or customerIdKey.existingSecret (key CUSTOMER_ID_KEY) is required outside development (environment %s)" $env) -}}
{{- end -}}
{{- if and .Values.serviceMonitor.enabled (not .Values.serviceMonitor.bearerTokenSecret.name) -}}
{{- fail (printf "serviceMonitor.bearerTokenSecret.name is required outside development (environment %s): /metrics needs a token with the metrics scope" $env) -}}
{{- end -}}
{{- if and .Values.survey.signingKey (lt (len .Values.survey.signingKey) 32) -}}
{{- fail "survey.signingKey must be at least 32 characters" -}}
{{- end -}}
{{- end -}}
{{- if and .Values.customerIdKey.value (lt (len .Values.customerIdKey.value) 32) -}}
{{- fail "customerIdKey.value must be at least 32 characters" -}}
{{- end -}}
{{- if and (hasPrefix "SASL_" .Values.kafka.security.protocol) (not (and .Values.kafka.security.username .Values.kafka.security.existingSecret)) -}}
{{- fail "kafka.security.username and kafka.security.existingSecret (key KAFKA_SASL_PASSWORD) are required with SASL" -}}
{{- end -}}
{{- with .Values.apiTokens.json -}}
{{- if not (hasPrefix "{" (trim .)) -}}
{{- fail "apiTokens.json must be a JSON object {\"<token>\": {\"subject\": ..., \"scopes\": [...]}}" -}}
{{- end -}}
{{- end -}}
{{- include "aftersales.validateShutdown" . -}}
{{- if gt (int .Values.services.metrics.replicas) 1 -}}
{{- fail "services.metrics.replicas must be 0 or 1: KPI series are exported per instance" -}}
{{- end -}}
{{- end -}}

{{/*
The preStop sleep, the services' shutdown budget (SHUTDOWN_GRACE_S, also where extraEnv or a service's env
sets it) and the margin must fit in terminationGracePeriodSeconds: the kubelet SIGKILLs the pod at its end,
and a service killed there has not flushed its outbox nor closed its producer.
*/}}
{{- define "aftersales.validateShutdown" -}}
{{- $period := int .Values.terminationGracePeriodSeconds -}}
{{- $sleep := int .Values.shutdown.preStopSleepSeconds -}}
{{- $margin := int .Values.shutdown.marginSeconds -}}
{{- $derived := int (include "aftersales.shutdownGraceSeconds" .) -}}
{{- if lt $derived 5 -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) leaves SHUTDOWN_GRACE_S = %d s after shutdown.preStopSleepSeconds (%d) and shutdown.marginSeconds (%d); the services need at least 5 s to stop consuming and flush their outbox: raise terminationGracePeriodSeconds or shorten the preStop sleep" $period $derived $sleep $margin) -}}
{{- end -}}
{{- range $name, $svc := .Values.services -}}
{{- $grace := float64 $derived -}}
{{- $source := "" -}}
{{- range $.Values.extraEnv -}}
{{- if and (eq .name "SHUTDOWN_GRACE_S") (hasKey . "value") -}}
{{- $grace = float64 .value -}}
{{- $source = "extraEnv" -}}
{{- end -}}
{{- end -}}
{{- range $svc.env -}}
{{- if and (eq .name "SHUTDOWN_GRACE_S") (hasKey . "value") -}}
{{- $grace = float64 .value -}}
{{- $source = printf "services.%s.env" $name -}}
{{- end -}}
{{- end -}}
{{- if and $source (gt (addf $sleep $grace $margin) (float64 $period)) -}}
{{- fail (printf "%s sets SHUTDOWN_GRACE_S=%v for %s: shutdown.preStopSleepSeconds (%d) + SHUTDOWN_GRACE_S (%v) + shutdown.marginSeconds (%d) = %v s exceeds terminationGracePeriodSeconds (%d), so Kubernetes would SIGKILL the pod before it flushed its outbox" $source $grace $name $sleep $grace $margin (addf $sleep $grace $margin) $period) -}}
{{- end -}}
{{- end -}}
{{- end -}}
