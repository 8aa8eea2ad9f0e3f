#!/usr/bin/env bash
# Installs the system packages SSMRec links against (OpenBLAS, LAPACKE, pkg-config) when any is
# missing. Debian/Ubuntu only; uses sudo when not root.
set -euo pipefail

if command -v pkg-config >/dev/null 2>&1 && pkg-config --exists openblas 2>/dev/null &&
  { [ -f /usr/include/lapacke.h ] || ls /usr/include/*/lapacke.h >/dev/null 2>&1; }; then
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "SSMRec needs OpenBLAS, LAPACKE and pkg-config; install them with your package manager" >&2
  echo "(Debian/Ubuntu: libopenblas-dev liblapacke-dev pkg-config)." >&2
  exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "[deps] installing libopenblas-dev liblapacke-dev pkg-config"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libopenblas-dev liblapacke-dev pkg-config >/dev/null
