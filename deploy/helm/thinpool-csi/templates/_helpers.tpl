{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "thinpool-csi.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Fully qualified app name: release name, plus the chart name unless the release name contains it. */}}
{{- define "thinpool-csi.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "thinpool-csi.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The CSI driver name. Not a value: the topology key (thinpool.csi.dev/node), the socket and registration
paths and every StorageClass/VolumeSnapshotClass derive from it.
*/}}
{{- define "thinpool-csi.driverName" -}}thinpool.csi.dev{{- end -}}

{{- define "thinpool-csi.selectorLabels" -}}
app.kubernetes.io/name: {{ include "thinpool-csi.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "thinpool-csi.labels" -}}
{{ include "thinpool-csi.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: thinpool-csi
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- if eq .Release.Service "Helm" }}
helm.sh/chart: {{ include "thinpool-csi.chart" . }}
{{- end }}
{{- end -}}

{{/* Image reference from {registry, repository, tag, digest}; call with (dict "image" X "defaultTag" Y). */}}
{{- define "thinpool-csi.image" -}}
{{- $img := .image -}}
{{- $repo := $img.repository -}}
{{- if $img.registry -}}
{{- $repo = printf "%s/%s" (trimSuffix "/" $img.registry) $img.repository -}}
{{- end -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $repo $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .defaultTag $img.tag | toString) -}}
{{- end -}}
{{- end -}}

{{- define "thinpool-csi.kubeletDir" -}}
{{- $dir := required "kubeletDir is required" .Values.kubeletDir | trimSuffix "/" -}}
{{- if not (hasPrefix "/" $dir) -}}
{{- fail (printf "kubeletDir must be an absolute path, got %q" $dir) -}}
{{- end -}}
{{- $dir -}}
{{- end -}}

{{/* Host directory of the driver socket; kubelet and the registrar know the socket by this path. */}}
{{- define "thinpool-csi.socketDir" -}}
{{- printf "%s/plugins/%s" (include "thinpool-csi.kubeletDir" .) (include "thinpool-csi.driverName" .) -}}
{{- end -}}

{{- define "thinpool-csi.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (printf "%s-node" (include "thinpool-csi.fullname" .)) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "thinpool-csi.priorityClassCreatedName" -}}
{{- default (printf "%s-node" (include "thinpool-csi.fullname" .)) .Values.priorityClass.name -}}
{{- end -}}

{{- define "thinpool-csi.priorityClassName" -}}
{{- if .Values.node.priorityClassName -}}
{{- .Values.node.priorityClassName -}}
{{- else if .Values.priorityClass.create -}}
{{- include "thinpool-csi.priorityClassCreatedName" . -}}
{{- end -}}
{{- end -}}

{{/* The snapshot.storage.k8s.io/v1 classes can be created: the API is served, or this chart installs it. */}}
{{- define "thinpool-csi.snapshotApi" -}}
{{- if or .Values.snapshotCRDs.install (.Capabilities.APIVersions.Has "snapshot.storage.k8s.io/v1/VolumeSnapshotClass") -}}
true
{{- end -}}
{{- end -}}

{{/* Checks one list of pools; call with (dict "pools" LIST "where" "config.pools"). */}}
{{- define "thinpool-csi.validatePools" -}}
{{- $where := .where -}}
{{- if not (kindIs "slice" .pools) -}}
{{- fail (printf "%s must be a list of pools" $where) -}}
{{- end -}}
{{- range $i, $p := .pools -}}
{{- if not (kindIs "map" $p) -}}
{{- fail (printf "%s[%d] must be a map with name and source" $where $i) -}}
{{- end -}}
{{- if not $p.name -}}
{{- fail (printf "%s[%d].name is required" $where $i) -}}
{{- end -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$" (toString $p.name)) -}}
{{- fail (printf "%s[%d].name must be 1-63 lowercase letters, digits or '-', got %q" $where $i (toString $p.name)) -}}
{{- end -}}
{{- $src := default (dict) $p.source -}}
{{- if not (has $src.type (list "existing" "devices" "loop")) -}}
{{- fail (printf "%s[%d] (%s): source.type must be existing, devices or loop" $where $i $p.name) -}}
{{- end -}}
{{- if and (eq $src.type "existing") (not $src.device) -}}
{{- fail (printf "%s[%d] (%s): an existing pool needs source.device (dm name or /dev/mapper path)" $where $i $p.name) -}}
{{- end -}}
{{- if and (eq $src.type "loop") (not (and $src.dataSize $src.metadataSize)) -}}
{{- fail (printf "%s[%d] (%s): a loop pool needs source.dataSize and source.metadataSize" $where $i $p.name) -}}
{{- end -}}
{{- if and (eq $src.type "devices") (not (and $src.data $src.metadata)) -}}
{{- fail (printf "%s[%d] (%s): a devices pool needs source.data and source.metadata" $where $i $p.name) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "thinpool-csi.validateConfig" -}}
{{- $c := .Values.config -}}
{{- $pools := default (list) $c.pools -}}
{{- $nodes := default (dict) $c.nodes -}}
{{- include "thinpool-csi.validatePools" (dict "pools" $pools "where" "config.pools") -}}
{{- range $node, $o := $nodes -}}
{{- include "thinpool-csi.validatePools" (dict "pools" (default (list) $o.pools) "where" (printf "config.nodes.%s.pools" $node)) -}}
{{- end -}}
{{- if and (not $pools) (not $nodes) -}}
{{- fail "config.pools (or config.nodes.<node>.pools) must name at least one pool" -}}
{{- end -}}
{{- end -}}

{{/* The driver's config file (docs/CONFIGURATION.md). */}}
{{- define "thinpool-csi.configFile" -}}
{{- toYaml .Values.config -}}
{{- end -}}
