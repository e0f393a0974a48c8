#!/usr/bin/env bash
# Installs everything Ferry and its tests need on a fresh Debian 12 machine
# (as root), builds bin/ferry and installs the "Python 3 (Ferry)" kernelspec.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(
  # the Jupyter stack Ferry's kernels and tests run on
  python3-ipykernel python3-jupyter-client jupyter-client jupyter-server python3-jupyter-server
  python3-nbclient python3-nbformat jupyter-nbconvert jupyter-console python3-jupyter-kernel-test
  # state serialisation and compression inside the kernels
  python3-dill python3-cloudpickle python3-zstandard
  # data science packages of the benchmark and test notebooks
  python3-numpy python3-pandas python3-sklearn python3-matplotlib python3-sympy
  # ZeroMQ for the Go side (cgo), and the build
  libzmq3-dev pkg-config gcc
  # tests: terminal front end, network shaping, the test bed's separate
  # cloud (unshare, setpriv, mount, useradd)
  tmux iproute2 procps util-linux mount passwd
  # the browser test (internal/browser): classic Notebook 6 driven in
  # headless Chromium through selenium, with ipywidgets' Notebook extension
  jupyter-notebook python3-selenium chromium chromium-driver
  python3-ipywidgets python3-widgetsnbextension jupyter-nbextension-jupyter-js-widgets
  # the JupyterHub tests (internal/backend/hub_test.go): a real hub with its
  # proxy on loopback spawning single-user servers
  jupyterhub node-configurable-http-proxy
)
if [ "$(id -u)" -ne 0 ]; then
  echo "setup: run as root (it installs Debian packages): sudo $0" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# The test bed's cloud runs as its own unprivileged user (internal/testbed;
# the tests create it too when missing).
id ferrycloud >/dev/null 2>&1 || useradd --system --user-group --no-create-home \
  --home-dir /nonexistent --shell /usr/sbin/nologin ferrycloud
export PATH="$PATH:/usr/local/go/bin"
go build -o bin/ferry ./cmd/ferry
./bin/ferry install --python /usr/bin/python3
echo "setup: done; bin/ferry is built and the 'ferry' kernelspec is installed"
