#!/usr/bin/env bash
# End-to-end suite against a real cluster: kind + KServe in Standard (raw Deployment) mode + Esteira.
# Needs docker, kind and network access; helm and kubectl come from hack/install-tools.sh.
# The cluster is kept for the next run; remove it with: kind delete cluster --name esteira-e2e
set -euo pipefail

CLUSTER=esteira-e2e
NAMESPACE=esteira-e2e
IMAGE=esteira/operator:dev
MODEL_SERVER_IMAGE=esteira/model-server:dev
MODEL_SERVER_KSERVE_IMAGE=esteira/model-server-kserve:dev
VALUES=hack/kind-e2e-values.yaml  # the chart's values: the images above, both runtimes installed
# The suite runs once for each runtime a ModelDeployment may name; KIND_E2E_RUNTIMES picks some.
RUNTIMES=${KIND_E2E_RUNTIMES:-esteira-torchserve esteira-kserve}
MODEL_SERVER_BASE=nginx:1.27-alpine  # serves the packaged demo model to KServe's storage initializer
KIND_NODE_IMAGE=${KIND_NODE_IMAGE:-}  # empty: the kind release's default node image
# KServe Standard mode needs cert-manager (webhook certificates); canary traffic splits in Standard mode
# go through Gateway API HTTPRoutes, which need the CRDs and an implementation (Envoy Gateway, as KServe's
# own quick install uses).
KSERVE_VERSION=v0.20.0
CERT_MANAGER_VERSION=v1.17.0
GATEWAY_API_VERSION=v1.6.1
ENVOY_GATEWAY_VERSION=v1.7.0
KSERVE_URL=https://github.com/kserve/kserve/releases/download/$KSERVE_VERSION
CERT_MANAGER_URL=https://github.com/cert-manager/cert-manager/releases/download/$CERT_MANAGER_VERSION/cert-manager.yaml
GATEWAY_API_URL=https://github.com/kubernetes-sigs/gateway-api/releases/download/$GATEWAY_API_VERSION/standard-install.yaml
ENVOY_GATEWAY_CHARTS=oci://docker.io/envoyproxy

cd "$(dirname "$0")/.."
export PATH="$PWD/.tools/bin:$PATH"
export KUBECONFIG="$PWD/.tools/kind-$CLUSTER.kubeconfig"  # leaves ~/.kube/config alone

say() { printf '\n==> %s\n' "$*"; }
# Webhooks (cert-manager's, KServe's) answer a little after their Deployments report Available.
retry() {
  local attempt
  for attempt in 1 2 3 4 5 6; do
    "$@" && return 0
    echo "retrying in 10s ($attempt/6): $*"
    sleep 10
  done
  return 1
}
for tool in docker kind; do
  command -v "$tool" >/dev/null || { echo "$tool is required (see https://kind.sigs.k8s.io/)" >&2; exit 1; }
done
[ -x .venv/bin/python ] || make install
bash hack/install-tools.sh  # quick when the tools are already there

say "kind cluster $CLUSTER (kubeconfig $KUBECONFIG)"
mkdir -p .tools
if kind get clusters | grep -qx "$CLUSTER"; then
  kind export kubeconfig --name "$CLUSTER" --kubeconfig "$KUBECONFIG"
else
  kind create cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG" --wait 120s ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"}
fi

say "cert-manager $CERT_MANAGER_VERSION"
kubectl apply -f "$CERT_MANAGER_URL"
kubectl -n cert-manager wait --for=condition=Available deployment --all --timeout=300s

say "Gateway API $GATEWAY_API_VERSION CRDs (standard channel), Envoy Gateway $ENVOY_GATEWAY_VERSION"
kubectl apply --server-side -f "$GATEWAY_API_URL"
# Envoy Gateway's own CRDs only: the Gateway API ones above are the version the project validates against.
helm upgrade --install eg-crds "$ENVOY_GATEWAY_CHARTS/gateway-crds-helm" --version "$ENVOY_GATEWAY_VERSION" \
  --set crds.envoyGateway.enabled=true --set crds.gatewayAPI.enabled=false
helm upgrade --install eg "$ENVOY_GATEWAY_CHARTS/gateway-helm" --version "$ENVOY_GATEWAY_VERSION" \
  -n envoy-gateway-system --create-namespace --skip-crds --set crds.enabled=false --wait --timeout 5m

say "KServe $KSERVE_VERSION (Standard mode, Gateway API ingress)"
retry kubectl apply --server-side --force-conflicts -f "$KSERVE_URL/kserve.yaml"
kubectl -n kserve wait --for=condition=Available deployment/kserve-controller-manager --timeout=300s
retry kubectl apply --server-side --force-conflicts -f "$KSERVE_URL/kserve-cluster-resources.yaml"
kubectl -n kserve get configmap inferenceservice-config -o json | .venv/bin/python -c '
import json, sys
cm = json.load(sys.stdin)
cm["data"]["deploy"] = json.dumps({"defaultDeploymentMode": "Standard"})
ingress = json.loads(cm["data"]["ingress"])
ingress.update(enableGatewayApi=True, kserveIngressGateway="kserve/kserve-ingress-gateway")
cm["data"]["ingress"] = json.dumps(ingress)
json.dump(cm, sys.stdout)
' | kubectl apply -f -
kubectl apply -f - <<'EOF'
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: envoy
spec:
  controllerName: gateway.envoyproxy.io/gatewayclass-controller
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: kserve-ingress-gateway
  namespace: kserve
spec:
  gatewayClassName: envoy
  listeners:
    - name: http
      protocol: HTTP
      port: 80
      allowedRoutes:
        namespaces:
          from: All
EOF
kubectl -n kserve rollout restart deployment/kserve-controller-manager
kubectl -n kserve rollout status deployment/kserve-controller-manager --timeout=300s

say "Esteira CRDs and namespace $NAMESPACE"
kubectl apply --server-side -f manifests/crds/
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -

say "images $IMAGE, $MODEL_SERVER_IMAGE and $MODEL_SERVER_KSERVE_IMAGE"
docker build --target operator -t "$IMAGE" .
docker build --target model-server -t "$MODEL_SERVER_IMAGE" .
docker build --target model-server-kserve -t "$MODEL_SERVER_KSERVE_IMAGE" .
kind load docker-image "$IMAGE" "$MODEL_SERVER_IMAGE" "$MODEL_SERVER_KSERVE_IMAGE" --name "$CLUSTER"

say "Esteira from charts/esteira (cluster-wide, with the esteira-torchserve and esteira-kserve runtimes)"
helm upgrade --install esteira charts/esteira -n "$NAMESPACE" --wait --timeout 5m -f "$VALUES"

# Every test namespace must reach the model, so it is served over HTTP rather than from a PVC. The
# tests give each build its own URL (a query string); the server ignores it and sends the same archive.
say "demo model served at http://esteira-models.$NAMESPACE.svc.cluster.local/iris-1.0.0.tar.gz"
make models
archive=$(mktemp -d)/iris-1.0.0.tar.gz
tar czf "$archive" -C build/models/iris-1.0.0 .
kubectl -n "$NAMESPACE" create configmap esteira-models --from-file="$archive" --dry-run=client -o yaml \
  | kubectl apply -f -
kubectl -n "$NAMESPACE" apply -f - <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: esteira-models}
spec:
  selector: {matchLabels: {app: esteira-models}}
  template:
    metadata: {labels: {app: esteira-models}}
    spec:
      containers:
        - name: nginx
          image: $MODEL_SERVER_BASE
          ports: [{containerPort: 80}]
          volumeMounts: [{name: models, mountPath: /usr/share/nginx/html, readOnly: true}]
      volumes: [{name: models, configMap: {name: esteira-models}}]
---
apiVersion: v1
kind: Service
metadata: {name: esteira-models}
spec:
  selector: {app: esteira-models}
  ports: [{port: 80, targetPort: 80}]
YAML
kubectl -n "$NAMESPACE" rollout status deployment/esteira-models --timeout=120s

# The chart's operator does the work; tests that need the emulator (faults, fake KServe) skip. Both runtimes
# read the same packaged model.
for runtime in $RUNTIMES; do
  say "end-to-end tests, the model served by $runtime"
  ESTEIRA_E2E_KUBECONFIG="$KUBECONFIG" ESTEIRA_E2E_OPERATOR=external \
    ESTEIRA_E2E_STORAGE_URI="http://esteira-models.$NAMESPACE.svc.cluster.local/iris-1.0.0.tar.gz" \
    ESTEIRA_E2E_RUNTIME="$runtime" \
    .venv/bin/python -m pytest -m e2e tests/e2e
done
