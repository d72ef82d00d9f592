{{/* Chart name, or nameOverride. */}}
{{- define "hybrid-dr.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name, truncated to leave room for the "-control"/"-node" suffixes
within the 63 characters of a DNS label.
*/}}
{{- define "hybrid-dr.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 55 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "hybrid-dr.controlName" -}}
{{- printf "%s-control" (include "hybrid-dr.fullname" .) }}
{{- end }}

{{- define "hybrid-dr.nodeName" -}}
{{- printf "%s-node" (include "hybrid-dr.fullname" .) }}
{{- end }}

{{/* The target nodes' transfer Service (a DNS label: at most 63 characters). */}}
{{- define "hybrid-dr.nodeTransferName" -}}
{{- printf "%s-transfer" (include "hybrid-dr.nodeName" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hybrid-dr.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels. */}}
{{- define "hybrid-dr.labels" -}}
helm.sh/chart: {{ include "hybrid-dr.chart" . }}
app.kubernetes.io/name: {{ include "hybrid-dr.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component; call with (dict "ctx" $ "component" "control"). */}}
{{- define "hybrid-dr.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hybrid-dr.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "hybrid-dr.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The control plane's gRPC address inside the cluster, for DR_NODE_CONTROL. */}}
{{- define "hybrid-dr.controlAddress" -}}
{{- printf "%s.%s.svc:%d" (include "hybrid-dr.controlName" .) .Release.Namespace (int .Values.control.grpcPort) }}
{{- end }}
