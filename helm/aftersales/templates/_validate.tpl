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
{{- if gt (int .Values.services.metrics.replicas) 1 -}}
{{- fail "services.metrics.replicas must be 0 or 1: KPI series are exported per instance" -}}
{{- end -}}
{{- end -}}
