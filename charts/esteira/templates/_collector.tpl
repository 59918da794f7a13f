{{/* Names and labels of the collector's objects (templates/collector*.yaml). */}}

{{- define "esteira.collector.fullname" -}}
{{- printf "%s-collector" (include "esteira.fullname" . | trunc 53 | trimSuffix "-") }}
{{- end }}

{{- define "esteira.collector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "esteira.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: collector
{{- end }}

{{- define "esteira.collector.labels" -}}
helm.sh/chart: {{ include "esteira.chart" . }}
{{ include "esteira.collector.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: esteira
{{- end }}

{{/* Where the operator and, by default, the model servers in every watched namespace reach the collector. */}}
{{- define "esteira.collector.url" -}}
{{- printf "http://%s.%s.svc:%v" (include "esteira.collector.fullname" .) .Release.Namespace .Values.collector.port }}
{{- end }}

{{- define "esteira.collector.tokenSecret" -}}
{{- default (printf "%s-token" (include "esteira.collector.fullname" .)) .Values.collector.token.existingSecret }}
{{- end }}

{{- define "esteira.collector.claim" -}}
{{- default (printf "%s-data" (include "esteira.collector.fullname" .)) .Values.collector.database.sqlite.existingClaim }}
{{- end }}
