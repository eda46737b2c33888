{{- define "index766.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "index766.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "index766.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "index766.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "index766.selectorLabels" -}}
app.kubernetes.io/name: {{ include "index766.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "index766.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "index766.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "index766.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "index766.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "index766.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{/*
The pipeline's whole configuration (pipeline/config/default.toml is under it): the chart's own
settings over .Values.config. Credentials are never written here: they are mounted Secrets,
named by path, or environment variables from Secrets ("${env:…}" for librdkafka's password).
*/}}
{{/* A StatefulSet when snapshots are on a volume (a claim per replica), or when several replicas
share a bucket (each its own prefix there, named after its stable pod name). */}}
{{- define "index766.stateful" -}}
{{- if or (eq .Values.snapshots.store "volume") (gt (int .Values.replicaCount) 1) }}true{{ end -}}
{{- end }}

{{- define "index766.config" -}}
{{- $v := .Values -}}
{{- $kafka := dict "bootstrap.servers" $v.kafka.bootstrapServers "group.id" (default (include "index766.fullname" .) $v.kafka.groupId) "security.protocol" $v.kafka.securityProtocol -}}
{{- if hasPrefix "SASL" $v.kafka.securityProtocol -}}
{{- $_ := set $kafka "sasl.mechanism" $v.kafka.sasl.mechanism -}}
{{- $_ := set $kafka "sasl.username" $v.kafka.sasl.username -}}
{{- $_ := set $kafka "sasl.password" "${env:INDEX766_KAFKA_SASL_PASSWORD}" -}}
{{- end -}}
{{- if $v.kafka.tls.existingSecret -}}
{{- $_ := set $kafka "ssl.ca.location" (printf "/etc/index766/kafka-tls/%s" $v.kafka.tls.caKey) -}}
{{- if $v.kafka.tls.certKey -}}
{{- $_ := set $kafka "ssl.certificate.location" (printf "/etc/index766/kafka-tls/%s" $v.kafka.tls.certKey) -}}
{{- $_ := set $kafka "ssl.key.location" (printf "/etc/index766/kafka-tls/%s" $v.kafka.tls.keyKey) -}}
{{- end -}}
{{- end -}}
{{- $kafka = merge $kafka $v.kafka.properties -}}
{{- $t := $v.topics -}}
{{- $topics := dict "events" $t.events "petitions" $t.petitions "catalog" $t.catalog "units" $t.units "dead_letter" $t.deadLetter -}}
{{- $snapshot := dict "dir" "/var/lib/index766/snapshots" -}}
{{- if eq $v.snapshots.store "objectStore" -}}
{{- $_ := set $snapshot "url" $v.snapshots.objectStore.url -}}
{{- $_ := set $snapshot "options" $v.snapshots.objectStore.options -}}
{{- end -}}
{{- $access := dict "authentication" $v.access.authentication -}}
{{- if $v.access.tokensSecret -}}
{{- $_ := set $access "tokens_file" (printf "/etc/index766/access/%s" $v.access.tokensKey) -}}
{{- end -}}
{{- with $v.access.oidc -}}
{{- if .issuer -}}
{{- $_ := set $access "oidc" (dict "issuer" .issuer "audience" .audience "jwks_url" .jwksUrl "name_claim" .nameClaim "roles_claim" .rolesClaim "units_claim" .unitsClaim) -}}
{{- end -}}
{{- end -}}
{{- $tls := dict -}}
{{- if $v.tls.existingSecret -}}
{{- $tls = dict "cert_file" "/etc/index766/tls/tls.crt" "key_file" "/etc/index766/tls/tls.key" -}}
{{- if $v.tls.clientCertificates -}}
{{- $_ := set $tls "client_ca_file" "/etc/index766/tls/ca.crt" -}}
{{- $_ := set $tls "client_certificates" $v.tls.clientCertificates -}}
{{- end -}}
{{- end -}}
{{- $alerts := dict "topic" $t.alerts -}}
{{- if gt (int $v.replicaCount) 1 -}}
{{- $_ := set $alerts "election" (dict "topic" $v.election.topic "session_timeout_ms" (int $v.election.sessionTimeoutMs)) -}}
{{- end -}}
{{- $ours := dict "kafka" $kafka "topics" $topics "snapshot" $snapshot "access" $access "tls" $tls "http" (dict "listen" (printf "0.0.0.0:%d" (int $v.service.httpPort))) "sql" (dict "postgres_listen" (printf "0.0.0.0:%d" (int $v.service.postgresPort))) "alerts" $alerts -}}
{{- toToml (mergeOverwrite (deepCopy $v.config) $ours) -}}
{{- end }}
