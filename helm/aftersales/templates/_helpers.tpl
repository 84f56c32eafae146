{{- define "aftersales.labels" -}}
app.kubernetes.io/part-of: aftersales
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "aftersales.mongodbSecret" -}}
{{- default (printf "%s-mongodb" .Release.Name) .Values.mongodb.existingSecret -}}
{{- end -}}

{{- define "aftersales.tokensSecret" -}}
{{- default (printf "%s-api-tokens" .Release.Name) .Values.apiTokens.existingSecret -}}
{{- end -}}
