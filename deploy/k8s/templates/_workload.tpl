{{/*
One component of the suite, the same way for each service and for the gateway, auth and audit:
ServiceAccount, Deployment, Service, PodDisruptionBudget, HorizontalPodAutoscaler and
NetworkPolicy. Called with dict:
  root  the chart's root context
  name  the component (`order`, `gateway`, …)
  c     its values (`defaults` overridden by its own entry)
  spec  what differs per kind of component: args, env, ports, servicePorts, headless,
        serviceType, serviceAnnotations, probes, ingress, egress, volumes, volumeMounts,
        podAnnotations
*/}}
{{- define "cartage.workload" -}}
{{- $root := .root -}}
{{- $c := .c -}}
{{- $s := .spec -}}
{{- $fullname := printf "%s-%s" (include "cartage.fullname" $root) .name -}}
{{- $ctx := dict "root" $root "component" .name -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ $fullname }}
  labels:
    {{- include "cartage.labels" $ctx | nindent 4 }}
automountServiceAccountToken: false
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $fullname }}
  labels:
    {{- include "cartage.labels" $ctx | nindent 4 }}
spec:
  {{- if not $c.autoscaling.enabled }}
  replicas: {{ $c.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxUnavailable: 0, maxSurge: 1}
  selector:
    matchLabels:
      {{- include "cartage.selectorLabels" $ctx | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "cartage.labels" $ctx | nindent 8 }}
      {{- $annotations := merge (dict) ($s.podAnnotations | default dict) ($c.podAnnotations | default dict) }}
      {{- with $annotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      serviceAccountName: {{ $fullname }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: {{ $c.terminationGracePeriodSeconds }}
      securityContext:
        {{- include "cartage.podSecurityContext" $root | nindent 8 }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with include "cartage.topologySpread" $ctx }}
      {{- . | nindent 6 }}
      {{- end }}
      {{- with $c.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $c.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $c.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .name }}
          image: {{ include "cartage.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args:
            {{- toYaml $s.args | nindent 12 }}
          ports:
            {{- range $s.ports }}
            - name: {{ .name }}
              containerPort: {{ .containerPort }}
              protocol: TCP
            {{- end }}
          {{- with $s.env }}
          env:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- toYaml $s.probes | nindent 10 }}
          resources:
            {{- toYaml $c.resources | nindent 12 }}
          securityContext:
            {{- include "cartage.securityContext" $root | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- with $s.volumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir: {sizeLimit: 256Mi}
        {{- with $s.volumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $fullname }}
  labels:
    {{- include "cartage.labels" $ctx | nindent 4 }}
  {{- with $s.serviceAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  {{- if $s.headless }}
  # Headless: one DNS address per ready pod, which Envoy balances requests over (a ClusterIP
  # would pin each long-lived HTTP/2 connection, so all its requests, to one pod).
  clusterIP: None
  publishNotReadyAddresses: false
  {{- else }}
  type: {{ $s.serviceType | default "ClusterIP" }}
  {{- end }}
  selector:
    {{- include "cartage.selectorLabels" $ctx | nindent 4 }}
  ports:
    {{- range $s.servicePorts }}
    - name: {{ .name }}
      port: {{ .port }}
      targetPort: {{ .targetPort }}
      protocol: TCP
      {{- with .appProtocol }}
      appProtocol: {{ . }}
      {{- end }}
    {{- end }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $fullname }}
  labels:
    {{- include "cartage.labels" $ctx | nindent 4 }}
spec:
  {{- /* minAvailable, when given anywhere, wins over the defaults' maxUnavailable */}}
  {{- with $c.podDisruptionBudget }}
  {{- if hasKey . "minAvailable" }}
  minAvailable: {{ .minAvailable }}
  {{- else }}
  maxUnavailable: {{ .maxUnavailable }}
  {{- end }}
  {{- end }}
  unhealthyPodEvictionPolicy: AlwaysAllow
  selector:
    matchLabels:
      {{- include "cartage.selectorLabels" $ctx | nindent 6 }}
{{- if $c.autoscaling.enabled }}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $fullname }}
  labels:
    {{- include "cartage.labels" $ctx | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $fullname }}
  minReplicas: {{ $c.autoscaling.minReplicas }}
  maxReplicas: {{ $c.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $c.autoscaling.targetCPUUtilizationPercentage }}
  behavior:
    scaleDown:
      stabilizationWindowSeconds: 300
{{- end }}
{{- if $root.Values.networkPolicy.enabled }}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ $fullname }}
  labels:
    {{- include "cartage.labels" $ctx | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "cartage.selectorLabels" $ctx | nindent 6 }}
  policyTypes: [Ingress, Egress]
  ingress:
    {{- toYaml $s.ingress | nindent 4 }}
  egress:
    {{- toYaml $s.egress | nindent 4 }}
{{- end }}
{{- end -}}
