{{/* Fixed object name (the controller, the admission policy and clients refer to it). */}}
{{- define "service-ca.name" -}}service-ca{{- end -}}

{{- define "service-ca.namespace" -}}{{ required "namespace is required" .Values.namespace }}{{- end -}}

{{- define "service-ca.serviceAccount" -}}system:serviceaccount:{{ include "service-ca.namespace" . }}:{{ include "service-ca.name" . }}{{- end -}}

{{- define "service-ca.labels" -}}
app: service-ca
app.kubernetes.io/name: service-ca
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "service-ca.selector" -}}
app: service-ca
{{- end -}}

{{/* The namespaces whose Services and ConfigMaps are managed; empty: the whole cluster. */}}
{{- define "service-ca.clusterWide" -}}{{ if eq (.Values.watchNamespace | default "") "" }}true{{ end }}{{- end -}}

{{- define "service-ca.caSecret" -}}{{ .Values.ca.secretName | default "signing-key" }}{{- end -}}
{{- define "service-ca.bundleConfigMap" -}}{{ .Values.ca.bundleConfigMap | default "signing-cabundle" }}{{- end -}}
{{- define "service-ca.lease" -}}{{ .Values.leaseName | default "service-ca-controller-lock" }}{{- end -}}

{{- define "service-ca.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* The container's arguments: `service-ca run` and only the flags whose value is set. */}}
{{- define "service-ca.args" -}}
- run
- --namespace={{ include "service-ca.namespace" . }}
- --admin-addr=0.0.0.0:{{ .Values.adminPort }}
{{- if .Values.metrics.enabled }}
- --metrics-addr=0.0.0.0:{{ .Values.metrics.port }}
- --metrics-tls-cert-file=/etc/service-ca/metrics-tls/tls.crt
- --metrics-tls-key-file=/etc/service-ca/metrics-tls/tls.key
{{- end }}
{{- with .Values.logFormat }}
- --log-format={{ . }}
{{- end }}
{{- if not (include "service-ca.clusterWide" .) }}
- --watch-namespace={{ .Values.watchNamespace }}
- --cluster-scoped-injection=false
{{- else if not .Values.clusterScopedInjection }}
- --cluster-scoped-injection=false
{{- end }}
{{- with .Values.ca.secretName }}
- --ca-secret={{ . }}
{{- end }}
{{- with .Values.ca.bundleConfigMap }}
- --bundle-configmap={{ . }}
{{- end }}
{{- with .Values.ca.lifetime }}
- --ca-lifetime={{ . }}
{{- end }}
{{- with .Values.ca.rotationThreshold }}
- --rotation-threshold={{ . }}
{{- end }}
{{- with .Values.ca.trustBridgeMin }}
- --trust-bridge-min={{ . }}
{{- end }}
{{- with .Values.ca.keyAlgorithm }}
- --ca-key-algorithm={{ . }}
{{- end }}
{{- with .Values.ca.publishBundleTo }}
- --publish-bundle-to={{ . }}
{{- end }}
{{- with .Values.leaf.lifetime }}
- --leaf-lifetime={{ . }}
{{- end }}
{{- with .Values.leaf.renewBefore }}
- --renew-before={{ . }}
{{- end }}
{{- with .Values.leaf.keyAlgorithm }}
- --leaf-key-algorithm={{ . }}
{{- end }}
{{- with .Values.clusterDomain }}
- --cluster-domain={{ . }}
{{- end }}
{{- with .Values.chainOrder }}
- --chain-order={{ . }}
{{- end }}
{{- if .Values.concurrency }}
- --concurrency={{ .Values.concurrency }}
{{- end }}
{{- with .Values.denyNamespaces }}
- --deny-namespaces={{ join "," . }}
{{- end }}
{{- with .Values.leaseName }}
- --lease-name={{ . }}
{{- end }}
{{- if .Values.legacyInjector.enabled }}
- --legacy-injector=true
{{- with .Values.legacyInjector.caFile }}
- --legacy-ca-file={{ . }}
{{- end }}
{{- end }}
{{- with .Values.namespaceBundle.name }}
- --namespace-bundle-name={{ . }}
{{- end }}
{{- with .Values.namespaceBundle.selector }}
- --namespace-bundle-selector={{ . }}
{{- end }}
{{- range .Values.extraArgs }}
- {{ . }}
{{- end }}
{{- end -}}
