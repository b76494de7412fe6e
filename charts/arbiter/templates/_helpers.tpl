{{- define "arbiter.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "arbiter.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: arbiter
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- /* The operator's Pods; app.kubernetes.io/component keeps them apart from the routers'. */ -}}
{{- define "arbiter.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "arbiter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "arbiter.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "arbiter.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- /* "true" when leader election is on: explicitly, or by default with more than one replica. */ -}}
{{- define "arbiter.leaderElection" -}}
{{- if kindIs "bool" .Values.leaderElection.enabled -}}
{{- .Values.leaderElection.enabled -}}
{{- else -}}
{{- gt (int .Values.replicas) 1 -}}
{{- end -}}
{{- end -}}

{{- define "arbiter.leaseName" -}}
{{- default (include "arbiter.fullname" .) .Values.leaderElection.leaseName -}}
{{- end -}}

{{- define "arbiter.pdb" -}}
{{- if kindIs "bool" .Values.pdb.enabled -}}
{{- .Values.pdb.enabled -}}
{{- else -}}
{{- gt (int .Values.replicas) 1 -}}
{{- end -}}
{{- end -}}

{{- /* Topology spread constraints with the Pods' own selector filled in where a constraint has none.
Arguments: (list constraints selectorLabelsYaml). */ -}}
{{- define "arbiter.topologySpread" -}}
{{- $selector := fromYaml (index . 1) -}}
{{- $constraints := list -}}
{{- range (index . 0) -}}
{{- $constraint := deepCopy . -}}
{{- if not (hasKey $constraint "labelSelector") -}}
{{- $_ := set $constraint "labelSelector" (dict "matchLabels" $selector) -}}
{{- end -}}
{{- $constraints = append $constraints $constraint -}}
{{- end -}}
{{- toYaml $constraints -}}
{{- end -}}

{{- /* Router helpers take (dict "root" $ "instance" $instance). */ -}}
{{- define "arbiter.router.name" -}}
{{- printf "%s-router-%s" (include "arbiter.fullname" .root) .instance.name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "arbiter.router.namespace" -}}
{{- default .root.Release.Namespace .instance.namespace -}}
{{- end -}}

{{- define "arbiter.router.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: router
arbiter.dev/router: {{ .instance.name | quote }}
{{- end -}}

{{- define "arbiter.router.serviceAccountName" -}}
{{- if .Values.router.serviceAccount.create -}}
{{- default (printf "%s-router" (include "arbiter.fullname" .)) .Values.router.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.router.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "arbiter.router.image" -}}
{{- $repository := .Values.router.image.repository | default .Values.image.repository -}}
{{- $tag := .Values.router.image.tag | default .Values.image.tag | default .Chart.AppVersion -}}
{{- printf "%s:%s" $repository $tag -}}
{{- end -}}

{{- /* The namespaces that run at least one router, each once. */ -}}
{{- define "arbiter.router.namespaces" -}}
{{- $namespaces := list -}}
{{- range .Values.router.instances -}}
{{- $namespaces = append $namespaces (default $.Release.Namespace .namespace) -}}
{{- end -}}
{{- toJson (uniq $namespaces) -}}
{{- end -}}

{{/*
Notifications: on when there is a receiver or a cluster name. The file the operator reads turns each
receiver's urlSecretRef into the path where that Secret is mounted.
*/}}
{{- define "arbiter.notificationsEnabled" -}}
{{- if or .Values.notifications.receivers .Values.notifications.clusterName }}true{{ end }}
{{- end }}

{{- define "arbiter.notificationsConfig" -}}
{{- $n := .Values.notifications }}
{{- $receivers := list }}
{{- range $n.receivers }}
{{- $r := omit . "urlSecretRef" }}
{{- with .urlSecretRef }}
{{- $r = set $r "urlFile" (printf "/etc/arbiter/notifications/secrets/%s/%s" .name .key) }}
{{- end }}
{{- $receivers = append $receivers $r }}
{{- end }}
{{- $config := dict "clusterName" $n.clusterName "linkTemplate" $n.linkTemplate "receivers" $receivers "delivery" $n.delivery "alertmanager" $n.alertmanager }}
{{- toYaml $config }}
{{- end }}

{{/* The Secrets the notification receivers' URLs come from, each once. */}}
{{- define "arbiter.notificationSecrets" -}}
{{- $names := list }}
{{- range .Values.notifications.receivers }}
{{- with .urlSecretRef }}{{ $names = append $names .name }}{{ end }}
{{- end }}
{{- toJson (uniq $names) }}
{{- end }}
