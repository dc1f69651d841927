#!/usr/bin/env bash
# Prepare a fresh Debian 12 / Ubuntu host: host packages, a virtualenv with the harness, libvirt
# daemons and pool, the debian12 box. Idempotent; safe to run again. Needs root (apt, libvirt).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "ci/bootstrap.sh: run as root (it installs packages and starts libvirtd): sudo $0" >&2
  exit 2
fi
export DEBIAN_FRONTEND=noninteractive
# What pip needs to build libvirt-python and make the virtualenv, before the harness can run.
need=()
for p in python3-venv python3-dev gcc libvirt-dev pkg-config; do
  dpkg-query -W -f '${db:Status-Status}' "$p" 2>/dev/null | grep -qx installed || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need[@]}"
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[dev]'

.venv/bin/harness host setup
.venv/bin/harness box build debian12
.venv/bin/harness gc
