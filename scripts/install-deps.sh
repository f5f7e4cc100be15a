#!/usr/bin/env bash
# Installs everything albef-cpp needs to build, test and benchmark, from
# Debian 12's archive. Run as root (or with sudo available).
set -euo pipefail

packages=(
  g++ cmake make pkg-config
  libtorch-dev libopenblas0-openmp
  libopencv-core-dev libopencv-imgproc-dev libopencv-imgcodecs-dev
  libyaml-cpp-dev nlohmann-json3-dev libutf8proc-dev libcli11-dev
  libgtest-dev libbenchmark-dev libfaiss-dev libcpp-httplib-dev libgloo-dev libdnnl-dev zlib1g-dev
  python3-torch python3-numpy
  python3-dev pybind11-dev python3-pytest  # the Python module (python/) and its tests
  chromium wrk  # albef serve's browser test (headless) and load generator
  clang libclang-rt-14-dev  # scripts/fuzz.sh (libFuzzer)
)

if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: run as root (apt-get needs it)" >&2; exit 1; }
  exec sudo "$0" "$@"
fi

# Node.js drives chromium in the browser test; a node already installed
# (Debian's or another vendor's, which bundles npm) is kept.
command -v npm >/dev/null || packages+=(nodejs npm)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
else
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# puppeteer-core from npm (the version in tests/browser/package-lock.json);
# it drives Debian's chromium and never downloads a browser.
browser_tests="$(cd "$(dirname "$0")/../tests/browser" && pwd)"
if [ ! -d "$browser_tests/node_modules/puppeteer-core" ]; then
  echo "install-deps: npm ci in $browser_tests"
  npm ci --prefix "$browser_tests" --no-audit --no-fund ||
    echo "install-deps: npm ci failed (no registry?): the browser test of albef serve will be skipped" >&2
fi
