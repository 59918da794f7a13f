#!/usr/bin/env bash
# Downloads the upstream CRDs the schema tests validate against, at the releases Esteira supports, into
# DEST/<project>-<version>/ (the layout tests expect; point ESTEIRA_UPSTREAM_CRDS at DEST or let the tests
# find .tools/crds). Every file is checked against its pinned SHA-256, so a moved tag cannot change them.
# CRDS_MIRROR replaces https://raw.githubusercontent.com for machines that reach GitHub through a mirror.
set -euo pipefail

DEST=${1:?usage: hack/fetch-crds.sh DEST}
MIRROR=${CRDS_MIRROR:-https://raw.githubusercontent.com}

# folder  repository  tag  path in the repository  sha256
FILES="
kserve-v0.20.0 kserve/kserve v0.20.0 config/crd/full/serving.kserve.io_inferenceservices.yaml 57c3bf13f77de94678bf2ae3748056ec071ad2b9e88d6a28f44fb4710758fcff
kserve-v0.20.0 kserve/kserve v0.20.0 config/crd/full/serving.kserve.io_servingruntimes.yaml 380a3e1e1444cef9b8b88819596692728868205a2147dc66423be469a4a7bbb1
kserve-v0.20.0 kserve/kserve v0.20.0 config/crd/full/serving.kserve.io_clusterservingruntimes.yaml c6f6bbb1b4b11afd1e38bd6d7255a8795b86efa2b7d14946ccff9d23592e6846
kserve-v0.20.0 kserve/kserve v0.20.0 config/runtimes/kserve-torchserve.yaml 6668f2ba4c94d501da48454d36f329ce95bcea50e4b28a8df7edd024d5b36881
gateway-api-v1.6.1 kubernetes-sigs/gateway-api v1.6.1 config/crd/standard/gateway.networking.k8s.io_gateways.yaml 25b885f5870b8fff1ae82efa2628b2761cef3745900c2aecf8fb76629a01255a
gateway-api-v1.6.1 kubernetes-sigs/gateway-api v1.6.1 config/crd/standard/gateway.networking.k8s.io_grpcroutes.yaml 53a8d029da8f07e55d3fa58a5cf6de5950dab19fbb8d6a8082fb5e51ca5ef6fc
gateway-api-v1.6.1 kubernetes-sigs/gateway-api v1.6.1 config/crd/standard/gateway.networking.k8s.io_httproutes.yaml a424a0d6c953b162e71d1d97bb7e75012d8f1ac264e7274f2763d1b96ab39852
gateway-api-v1.6.1 kubernetes-sigs/gateway-api v1.6.1 config/crd/standard/gateway.networking.k8s.io_referencegrants.yaml 8c645e9333cfa67790cc2a53e0c00076f88b2bd4230d2b49688c78bc34f9b2c3
prometheus-operator-v0.93.0 prometheus-operator/prometheus-operator v0.93.0 example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml 45a93443daa687d3654f7e9631909ff7edcdf3ec09c5e60251b74aa2722aee5d
prometheus-operator-v0.93.0 prometheus-operator/prometheus-operator v0.93.0 example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml 78be98554b9c8506ab2b4f4feb91c5f3a56e536a0a510f3a8e876a459970d56d
prometheus-operator-v0.93.0 prometheus-operator/prometheus-operator v0.93.0 example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml a99047972c9dd7679ce2050b9968e8a08773492e671b3e17abd476d42aa78a32
"

command -v curl >/dev/null || { echo "fetch-crds: curl is needed to download the CRDs; install it and run again" >&2; exit 1; }

# Download into a sibling folder and move it into place at the end: an interrupted run leaves DEST as it was.
mkdir -p "$(dirname "$DEST")"
staging=$(mktemp -d "$DEST.partial.XXXXXX")
trap 'rm -rf "$staging"' EXIT

echo "Downloading the upstream CRDs (KServe v0.20.0, Gateway API v1.6.1, prometheus-operator v0.93.0) into $DEST"
while read -r folder repo tag path sha256; do
  [ -n "$folder" ] || continue
  target="$staging/$folder/$(basename "$path")"
  mkdir -p "$(dirname "$target")"
  url="$MIRROR/$repo/$tag/$path"
  curl --fail --silent --show-error --location --retry 3 --output "$target" "$url" || {
    echo "fetch-crds: could not download $url" >&2
    exit 1
  }
  echo "$sha256  $target" | sha256sum --check --quiet - || {
    echo "fetch-crds: $url does not have the pinned SHA-256 $sha256" >&2
    exit 1
  }
done <<<"$FILES"

rm -rf "$DEST"
mv "$staging" "$DEST"
trap - EXIT
echo "Upstream CRDs are in $DEST"
