{{- /*
In-repo replacements for the deckhouse helm_lib helpers this chart needs (helm_lib itself is not
vendored). Names and call conventions match helm_lib, because dmt greps for some of them
(helm_lib_module_image, helm_lib_prometheus_rules, helm_lib_grafana_dashboard_definitions) and
injects its own helm_lib_module_image* stubs at lint time; both render `<registry>@<digest>`.
*/ -}}

{{- define "helm_lib_module_camelcase_name" -}}
{{- $name := . -}}
{{- if not (kindIs "string" .) -}}{{- $name = .Chart.Name -}}{{- end -}}
{{- $name | replace "-" "_" | camelcase | untitle -}}
{{- end -}}

{{- define "helm_lib_module_labels" -}}
{{- $context := index . 0 -}}
labels:
  heritage: deckhouse
  module: {{ $context.Chart.Name }}
{{- if eq (len .) 2 }}
{{- range $key, $value := index . 1 }}
  {{ $key }}: {{ $value | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "helm_lib_module_image" -}}
{{- $context := index . 0 -}}
{{- $image := index . 1 | trimAll "\"" -}}
{{- $module := include "helm_lib_module_camelcase_name" $context -}}
{{- if ge (len .) 3 }}{{- $module = include "helm_lib_module_camelcase_name" (index . 2) -}}{{- end -}}
{{- $digests := index ($context.Values.global.modulesImages.digests | default dict) $module | default dict -}}
{{- $digest := index $digests $image -}}
{{- if not $digest -}}{{- fail (printf "image %s.%s has no digest in global.modulesImages.digests" $module $image) -}}{{- end -}}
{{- $base := $context.Values.global.modulesImages.registry.base -}}
{{- $own := index $context.Values $module | default dict -}}
{{- if and $own.registry $own.registry.base -}}{{- $base = trimAll "/" $own.registry.base -}}{{- end -}}
{{- printf "%s@%s" $base $digest -}}
{{- end -}}

{{- define "helm_lib_api_version_exists" -}}
{{- $context := index . 0 -}}
{{- $apiVersion := index . 1 -}}
{{- $discovered := $context.Values.global.discovery.apiVersions | default list -}}
{{- if or (has $apiVersion $discovered) ($context.Capabilities.APIVersions.Has $apiVersion) -}}true{{- end -}}
{{- end -}}

{{- define "helm_lib_is_ha_to_value" -}}
{{- $context := index . 0 -}}
{{- $yes := index . 1 -}}
{{- $no := index . 2 -}}
{{- $module := index $context.Values (include "helm_lib_module_camelcase_name" $context) | default dict -}}
{{- $ha := false -}}
{{- if hasKey $module "highAvailability" -}}
{{- $ha = $module.highAvailability -}}
{{- else if hasKey $context.Values.global "highAvailability" -}}
{{- $ha = $context.Values.global.highAvailability -}}
{{- else -}}
{{- $ha = $context.Values.global.discovery.clusterControlPlaneIsHighlyAvailable | default false -}}
{{- end -}}
{{- if $ha -}}{{- $yes -}}{{- else -}}{{- $no -}}{{- end -}}
{{- end -}}

{{- define "helm_lib_ha_enabled" -}}
{{- include "helm_lib_is_ha_to_value" (list . "true" "") -}}
{{- end -}}

{{- define "helm_lib_deployment_strategy_and_replicas_for_ha" -}}
{{- if include "helm_lib_ha_enabled" . }}
replicas: 2
strategy:
  type: RollingUpdate
  rollingUpdate:
    maxSurge: 0
    maxUnavailable: 1
{{- else }}
replicas: 1
{{- end }}
{{- end -}}

{{- define "helm_lib_pod_anti_affinity_for_ha" -}}
{{- $context := index . 0 -}}
{{- $labels := index . 1 -}}
{{- if include "helm_lib_ha_enabled" $context }}
affinity:
  podAntiAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      - labelSelector:
          matchLabels:
            {{- $labels | toYaml | nindent 12 }}
        topologyKey: kubernetes.io/hostname
{{- end }}
{{- end -}}

{{- define "helm_lib_priority_class" -}}
{{- $context := index . 0 -}}
priorityClassName: {{ index . 1 }}
{{- end -}}

{{- define "helm_lib_node_selector" -}}
{{- /* (tuple . "system"): the module's own dedicated nodes, else system nodes, else anywhere. */ -}}
{{- $context := index . 0 -}}
{{- $strategy := index . 1 -}}
{{- $counts := $context.Values.global.discovery.d8SpecificNodeCountByRole | default dict -}}
{{- $module := include "helm_lib_module_camelcase_name" $context -}}
{{- if gt (index $counts $module | default 0 | int) 0 }}
nodeSelector:
  node-role.deckhouse.io/{{ $context.Chart.Name }}: ""
{{- else if gt (index $counts $strategy | default 0 | int) 0 }}
nodeSelector:
  node-role.deckhouse.io/{{ $strategy }}: ""
{{- end }}
{{- end -}}

{{- define "helm_lib_tolerations" -}}
{{- /* (tuple . "system"): tolerate the module's own and the system dedicated taints. */ -}}
{{- $context := index . 0 -}}
tolerations:
  - key: dedicated.deckhouse.io
    operator: Equal
    value: {{ $context.Chart.Name | quote }}
  - key: dedicated.deckhouse.io
    operator: Equal
    value: system
{{- end -}}

{{- define "helm_lib_module_ephemeral_storage_only_logs" -}}
ephemeral-storage: 50Mi
{{- end -}}

{{- define "helm_lib_module_pod_security_context_run_as_user_deckhouse" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: 64535
  runAsGroup: 64535
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{- define "helm_lib_module_container_security_context_read_only_root_filesystem_capabilities_drop_all_pss_restricted" -}}
securityContext:
  readOnlyRootFilesystem: true
  allowPrivilegeEscalation: false
  privileged: false
  runAsNonRoot: true
  capabilities:
    drop:
      - ALL
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{- define "helm_lib_module_public_domain" -}}
{{- $context := index . 0 -}}
{{- $name := index . 1 -}}
{{- $template := $context.Values.global.modules.publicDomainTemplate | default "" -}}
{{- if not (contains "%s" $template) -}}{{- fail "global.modules.publicDomainTemplate must contain \"%s\"" -}}{{- end -}}
{{- printf $template $name -}}
{{- end -}}

{{- /* The public host of published exports: the publicHost setting, else data-exporter in the
cluster's public domain template; empty when neither is set. */ -}}
{{- define "svdm_publish_host" -}}
{{- $module := index .Values (include "helm_lib_module_camelcase_name" .) -}}
{{- $host := $module.publicHost | default "" -}}
{{- if and (not $host) .Values.global.modules.publicDomainTemplate -}}
{{- $host = include "helm_lib_module_public_domain" (list . "data-exporter") -}}
{{- end -}}
{{- $host -}}
{{- end -}}

{{- /* "true" when the shared certificate of the public host comes from cert-manager: https mode
CertManager, the cert-manager module enabled and its Certificate API served. */ -}}
{{- define "svdm_cert_manager_certificate" -}}
{{- if and (eq (include "helm_lib_module_https_mode" .) "CertManager") (has "cert-manager" (.Values.global.enabledModules | default list)) (include "helm_lib_api_version_exists" (list . "cert-manager.io/v1/Certificate")) -}}
true
{{- end -}}
{{- end -}}

{{- define "helm_lib_module_ingress_class" -}}
{{- $module := index .Values (include "helm_lib_module_camelcase_name" .) | default dict -}}
{{- $module.ingressClass | default .Values.global.modules.ingressClass | default "nginx" -}}
{{- end -}}

{{- define "helm_lib_module_https_mode" -}}
{{- $module := index .Values (include "helm_lib_module_camelcase_name" .) | default dict -}}
{{- $https := $module.https | default dict -}}
{{- $global := .Values.global.modules.https | default dict -}}
{{- $https.mode | default $global.mode | default "Disabled" -}}
{{- end -}}

{{- define "helm_lib_module_https_cert_manager_cluster_issuer_name" -}}
{{- $module := index .Values (include "helm_lib_module_camelcase_name" .) | default dict -}}
{{- $https := $module.https | default dict -}}
{{- $global := .Values.global.modules.https | default dict -}}
{{- if $https.mode -}}
{{- ($https.certManager | default dict).clusterIssuerName | default "letsencrypt" -}}
{{- else -}}
{{- ($global.certManager | default dict).clusterIssuerName | default "letsencrypt" -}}
{{- end -}}
{{- end -}}

{{- define "helm_lib_module_https_custom_certificate_secret_name" -}}
{{- $module := index .Values (include "helm_lib_module_camelcase_name" .) | default dict -}}
{{- $https := $module.https | default dict -}}
{{- $global := .Values.global.modules.https | default dict -}}
{{- if $https.mode -}}
{{- ($https.customCertificate | default dict).secretName -}}
{{- else -}}
{{- ($global.customCertificate | default dict).secretName -}}
{{- end -}}
{{- end -}}

{{- define "helm_lib_module_https_copy_custom_certificate" -}}
{{- $context := index . 0 -}}
{{- $namespace := index . 1 -}}
{{- $prefix := index . 2 -}}
{{- if eq (include "helm_lib_module_https_mode" $context) "CustomCertificate" -}}
{{- $module := index $context.Values (include "helm_lib_module_camelcase_name" $context) -}}
{{- $data := $module.internal.customCertificateData | default dict -}}
{{- if and (index $data "tls.crt") (index $data "tls.key") }}
---
apiVersion: v1
kind: Secret
metadata:
  name: {{ $prefix }}-customcertificate
  namespace: {{ $namespace }}
  {{- include "helm_lib_module_labels" (list $context) | nindent 2 }}
type: kubernetes.io/tls
data:
  tls.crt: {{ index $data "tls.crt" | b64enc }}
  tls.key: {{ index $data "tls.key" | b64enc }}
  {{- if index $data "ca.crt" }}
  ca.crt: {{ index $data "ca.crt" | b64enc }}
  {{- end }}
{{- end }}
{{- end -}}
{{- end -}}

{{- define "helm_lib_kube_rbac_proxy_ca_certificate" -}}
{{- $context := index . 0 -}}
{{- $namespace := index . 1 -}}
{{- $internal := ($context.Values.global.internal | default dict).modules | default dict -}}
{{- $ca := ($internal.kubeRBACProxyCA | default dict).cert | default "" }}
---
apiVersion: v1
kind: ConfigMap
metadata:
  annotations:
    kubernetes.io/description: CA certificate of kube-rbac-proxy sidecars, for clients that scrape them.
  name: kube-rbac-proxy-ca.crt
  namespace: {{ $namespace }}
  {{- include "helm_lib_module_labels" (list $context) | nindent 2 }}
data:
  ca.crt: {{ $ca | quote }}
{{- end -}}

{{- define "helm_lib_prometheus_rules" -}}
{{- /* (list . "<namespace>"): one PrometheusRule per file under monitoring/prometheus-rules/. */ -}}
{{- $context := index . 0 -}}
{{- $namespace := index . 1 -}}
{{- if include "helm_lib_api_version_exists" (list $context "monitoring.coreos.com/v1/PrometheusRule") }}
{{- $interval := $context.Values.global.discovery.prometheusScrapeInterval | default 30 | int -}}
{{- range $path, $_ := $context.Files.Glob "monitoring/prometheus-rules/**" }}
{{- if or (hasSuffix ".yaml" $path) (hasSuffix ".tpl" $path) }}
{{- $content := $context.Files.Get $path -}}
{{- if hasSuffix ".tpl" $path }}{{- $content = tpl $content $context -}}{{- end -}}
{{- $content = $content | replace "__SCRAPE_INTERVAL_X_2__" (printf "%ds" (mul $interval 2)) | replace "__SCRAPE_INTERVAL_X_3__" (printf "%ds" (mul $interval 3)) | replace "__SCRAPE_INTERVAL_X_4__" (printf "%ds" (mul $interval 4)) | replace "__SCRAPE_INTERVAL__" (printf "%ds" $interval) }}
---
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: {{ $context.Chart.Name }}-{{ $path | trimPrefix "monitoring/prometheus-rules/" | replace "/" "-" | replace ".yaml" "" | replace ".tpl" "" }}
  namespace: {{ $namespace }}
  {{- include "helm_lib_module_labels" (list $context (dict "app" "prometheus" "prometheus" "main" "component" "rules")) | nindent 2 }}
spec:
  groups:
    {{- $content | nindent 4 }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "helm_lib_grafana_dashboard_definitions" -}}
{{- /* One GrafanaDashboardDefinition per JSON file under monitoring/grafana-dashboards/<folder>/. */ -}}
{{- $context := . -}}
{{- if include "helm_lib_api_version_exists" (list $context "deckhouse.io/v1/GrafanaDashboardDefinition") }}
{{- range $path, $_ := $context.Files.Glob "monitoring/grafana-dashboards/**.json" }}
{{- $parts := splitList "/" ($path | trimPrefix "monitoring/grafana-dashboards/") }}
{{- $folder := "Storage" }}
{{- if gt (len $parts) 1 }}{{- $folder = first $parts | title }}{{- end }}
---
apiVersion: deckhouse.io/v1
kind: GrafanaDashboardDefinition
metadata:
  name: d8-{{ $context.Chart.Name }}-{{ base $path | trimSuffix ".json" }}
  {{- include "helm_lib_module_labels" (list $context (dict "prometheus.deckhouse.io/grafana-dashboard" "")) | nindent 2 }}
spec:
  folder: {{ $folder | quote }}
  definition: |
    {{- $context.Files.Get $path | nindent 4 }}
{{- end }}
{{- end }}
{{- end -}}
