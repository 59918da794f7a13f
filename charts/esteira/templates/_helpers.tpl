{{/* Names, labels and the pieces several templates share. */}}

{{- define "esteira.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-esteira, or the release name alone when it already contains the chart name. */}}
{{- define "esteira.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "esteira.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "esteira.selectorLabels" -}}
app.kubernetes.io/name: {{ include "esteira.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "esteira.labels" -}}
helm.sh/chart: {{ include "esteira.chart" . }}
{{ include "esteira.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: esteira
{{- end }}

{{- define "esteira.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "esteira.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository@digest when a digest is given, else repository:tag (the chart's appVersion by default). */}}
{{- define "esteira.imageRef" -}}
{{- $image := index . 0 }}
{{- $root := index . 1 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{- define "esteira.image" -}}
{{- include "esteira.imageRef" (list .Values.image .) }}
{{- end }}

{{- define "esteira.clusterScoped" -}}
{{- if eq .Values.rbac.scope "cluster" }}true{{ end }}
{{- end }}

{{/*
RBAC rules for the namespaced resources the operator touches. tests/chart/test_rbac.py derives the same set
from the operator's code and Kopf's settings, and fails when the two differ.
*/}}
{{- define "esteira.namespacedRules" -}}
# ModelDeployments: Kopf lists and watches them and patches its finalizer and bookkeeping annotations;
# the reconciler reads each one before planning.
- apiGroups: ["serving.esteira.io"]
  resources: ["modeldeployments"]
  verbs: ["get", "list", "patch", "watch"]
# The reconciler writes status through the status subresource.
- apiGroups: ["serving.esteira.io"]
  resources: ["modeldeployments/status"]
  verbs: ["patch"]
# RolloutCommands: Kopf lists and watches them; the reconciler lists them to find the ones without an outcome.
- apiGroups: ["serving.esteira.io"]
  resources: ["rolloutcommands"]
  verbs: ["list", "watch"]
# The reconciler writes each RolloutCommand's outcome through the status subresource.
- apiGroups: ["serving.esteira.io"]
  resources: ["rolloutcommands/status"]
  verbs: ["patch"]
# Children carry an ownerReference with blockOwnerDeletion, which the OwnerReferencesPermissionEnforcement
# admission plugin allows only to who may update the owner's finalizers.
- apiGroups: ["serving.esteira.io"]
  resources: ["modeldeployments/finalizers"]
  verbs: ["update"]
# InferenceServices: the reconciler lists (by label), creates, patches and deletes them; Kopf watches them
# to react to KServe's status and to keep the index resyncs plan from.
- apiGroups: ["serving.kserve.io"]
  resources: ["inferenceservices"]
  verbs: ["create", "delete", "list", "patch", "watch"]
# HTTPRoutes for the GatewayAPI router: the reconciler lists (by label), creates, patches and deletes them;
# Kopf watches them to put a manual edit back and to keep the index resyncs plan from.
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["create", "delete", "list", "patch", "watch"]
# Retraining Jobs (spec.retraining.job): the reconciler lists a deployment's Jobs (by label) to learn their
# outcome and creates one per trigger; Kopf watches them to reconcile the owner when one finishes. Esteira
# never changes or deletes them (ownerReferences clean them up).
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "list", "watch"]
# Events on ModelDeployments: Kopf's handler outcomes and the reconciler's decisions.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
# Secrets named in a ModelDeployment's spec.monitoring.prometheusAuth.secretRef, in its own namespace: read
# one by name when an analysis is due. Never listed or watched, and sent to Prometheus only when the Secret is
# labelled serving.esteira.io/prometheus-auth=true (resourceNames cannot follow names chosen in each spec).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}

{{/*
Cluster-scoped reads Kopf makes. It watches CRDs to notice resource kinds appearing or going (e.g. Gateway
API installed later); when it serves named namespaces it also lists and watches namespaces to follow them.
API discovery (/api, /apis) needs no rule: the default system:discovery role grants it.
*/}}
{{- define "esteira.clusterReadRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
{{- if not (include "esteira.clusterScoped" .) }}
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}
{{- end }}
