{{/* Names and labels. */}}
{{- define "millrace.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "millrace.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "millrace.selectorLabels" -}}
app.kubernetes.io/name: {{ include "millrace.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "millrace.labels" -}}
{{ include "millrace.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "millrace.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "millrace.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "millrace.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "millrace.configMapName" -}}
{{- default (printf "%s-config" (include "millrace.fullname" .)) .Values.existingConfigMap -}}
{{- end -}}

{{- define "millrace.bindingsConfigMapName" -}}
{{- default (printf "%s-bindings" (include "millrace.fullname" .)) .Values.existingConfigMap -}}
{{- end -}}

{{- define "millrace.secretName" -}}
{{- default (printf "%s-secrets" (include "millrace.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* The worker configuration with the settings the chart owns. */}}
{{- define "millrace.workerConfig" -}}
{{- $owned := dict
      "bindings_file" "/etc/millrace/bindings/bindings.yaml"
      "reload" (dict "interval" .Values.reloadInterval)
      "metrics" (dict "address" (printf "0.0.0.0:%v" .Values.metrics.port))
      "registry" (dict "cache_dir" "/var/cache/millrace/plugins") -}}
{{- if .Values.registryCredentials.existingSecret -}}
{{- $_ := set $owned.registry "docker_config" "/etc/millrace/registry/.dockerconfigjson" -}}
{{- end -}}
{{- if .Values.cache.compiledKeySecret -}}
{{- $_ := set $owned.registry "compiled_key_file" "/etc/millrace/cache-key/compiled-key" -}}
{{- end -}}
{{- if .Values.pluginTrust.rules -}}
{{- $rules := list -}}
{{- range .Values.pluginTrust.rules -}}
{{- $keys := list -}}
{{- range (.keys | default list) -}}
{{- $keys = append $keys (printf "/etc/millrace/trust/%s" .) -}}
{{- end -}}
{{- $require := dig "requireSignature" true . -}}
{{- if and $require (not $.Values.pluginTrust.keysSecret) -}}
{{- fail (printf "pluginTrust.rules: %s requires signatures, so pluginTrust.keysSecret must name the Secret with its keys" .prefix) -}}
{{- end -}}
{{- $rules = append $rules (dict "prefix" .prefix "require_signature" $require "keys" $keys) -}}
{{- end -}}
{{- $_ := set $owned.registry "trust" $rules -}}
{{- end -}}
{{- $cfg := mergeOverwrite (deepCopy .Values.config) $owned -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* Both autoscalers at once is a mistake the chart refuses. */}}
{{- define "millrace.validate" -}}
{{- if and .Values.autoscaling.hpa.enabled .Values.autoscaling.keda.enabled -}}
{{- fail "autoscaling.hpa.enabled and autoscaling.keda.enabled cannot both be true: choose CPU (HPA) or consumer lag (KEDA)" -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled .Values.metrics.podMonitor.enabled -}}
{{- fail "metrics.serviceMonitor.enabled and metrics.podMonitor.enabled cannot both be true: the workers would be scraped twice" -}}
{{- end -}}
{{- end -}}
