#!/usr/bin/env bash
# Configures and builds albef-cpp into build/ (Release). At most two compile
# jobs: each LibTorch translation unit takes about 1 GB of memory.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"${ALBEF_BUILD_JOBS:-2}"
