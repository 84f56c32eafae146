{{- define "aftersales.labels" -}}
app.kubernetes.io/part-of: aftersales
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{/* Selector labels of one service: (dict "root" $ "name" "intake") */}}
{{- define "aftersales.selectorLabels" -}}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/name: {{ .name }}
{{- end -}}

{{/* "true" in development, the only environment where the services use their built-in dev tokens and keys. */}}
{{- define "aftersales.isDevelopment" -}}
{{- if eq .Values.environment "development" }}true{{ end -}}
{{- end -}}

{{/* The Secret holding CUSTOMER_ID_KEY, or nothing in development without a key (the dev key is used). */}}
{{- define "aftersales.customerIdSecret" -}}
{{- if .Values.customerIdKey.existingSecret -}}
{{ .Values.customerIdKey.existingSecret }}
{{- else if .Values.customerIdKey.value -}}
{{ printf "%s-customer-id-key" .Release.Name }}
{{- end -}}
{{- end -}}

{{- define "aftersales.mongodbSecret" -}}
{{- default (printf "%s-mongodb" .Release.Name) .Values.mongodb.existingSecret -}}
{{- end -}}

{{- define "aftersales.tokensSecret" -}}
{{- default (printf "%s-api-tokens" .Release.Name) .Values.apiTokens.existingSecret -}}
{{- end -}}

{{/* The Secret holding SURVEY_SIGNING_KEY, or nothing in development without a key (the dev key is used). */}}
{{- define "aftersales.surveySecret" -}}
{{- if .Values.survey.existingSecret -}}
{{ .Values.survey.existingSecret }}
{{- else if .Values.survey.signingKey -}}
{{ printf "%s-survey-signing" .Release.Name }}
{{- end -}}
{{- end -}}

{{- define "aftersales.surveyLinkBaseUrl" -}}
{{- if .Values.survey.linkBaseUrl -}}
{{ .Values.survey.linkBaseUrl }}
{{- else -}}
{{ printf "http://%s-feedback:%v/v1/surveys/" .Release.Name .Values.services.feedback.port }}
{{- end -}}
{{- end -}}

{{/* Image of one service: (dict "root" $ "name" "intake" "svc" $svc) */}}
{{- define "aftersales.image" -}}
{{- $tag := .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{ .root.Values.image.registry }}/aftersales-{{ .name }}:{{ $tag }}{{ with .svc.imageDigest }}@{{ . }}{{ end }}
{{- end -}}

{{/* Autoscaling settings of one service, or nothing when it is not autoscaled. The metrics service never is:
their KPI series would be counted once per replica. */}}
{{- define "aftersales.autoscaling" -}}
{{- $own := .svc.autoscaling | default dict -}}
{{- $as := dict -}}
{{- range $key, $default := .root.Values.autoscaling -}}
{{- $_ := set $as $key (ternary (get $own $key) $default (hasKey $own $key)) -}}
{{- end -}}
{{- if and $as.enabled (ne .name "metrics") -}}
{{ toYaml $as }}
{{- end -}}
{{- end -}}

{{/* SHUTDOWN_GRACE_S of the ConfigMap: the grace period left after the preStop hook and the margin. */}}
{{- define "aftersales.shutdownGraceSeconds" -}}
{{- sub (sub .Values.terminationGracePeriodSeconds .Values.shutdown.preStopSleepSeconds) .Values.shutdown.marginSeconds -}}
{{- end -}}
