#!/usr/bin/env bash
# One command on a fresh Debian 12 machine: install the dependencies, build,
# and run the demo on the data bundled in data/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
scripts/demo.sh
