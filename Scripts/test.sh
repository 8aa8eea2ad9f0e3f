#!/usr/bin/env bash
# Builds SSMRec and runs its test suite (debug build; benchmarks skip themselves in debug).
# Installs the system packages it needs first (apt-get, with sudo when not root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash Scripts/install-deps.sh
swift build
swift test
