#!/usr/bin/env bash
# Builds (if needed) and runs the whole test suite with CTest.
#   scripts/test.sh [CTEST ARGS...]
#   scripts/test.sh --sanitize address|thread [CTEST ARGS...]
# --sanitize builds into build-asan/ (AddressSanitizer + UndefinedBehaviorSanitizer)
# or build-tsan/ (ThreadSanitizer) and runs the same suite there, the Python
# module's tests aside (an instrumented extension needs the sanitizer's runtime
# preloaded into Python). Any report fails the test that triggered it; the
# suppressions in tests/sanitizers/ cover uninstrumented libraries only (each explained there).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" != --sanitize ]; then
  scripts/build.sh
  exec ctest --test-dir build --output-on-failure -j2 "$@"
fi

kind=${2:?--sanitize needs address or thread}
shift 2
case $kind in
  address) build=build-asan ;;
  thread) build=build-tsan ;;
  *) echo "--sanitize $kind: use address or thread" >&2; exit 2 ;;
esac
supp=$PWD/tests/sanitizers
cmake -S . -B $build -DCMAKE_BUILD_TYPE=Release -DALBEF_SANITIZE=$kind -DALBEF_BUILD_PYTHON=OFF >/dev/null
cmake --build $build -j"${ALBEF_BUILD_JOBS:-2}"
# halt_on_error: the first report ends the process with a failure, so the
# test that started it fails (child processes of the CLI tests included).
export ASAN_OPTIONS=halt_on_error=1:detect_leaks=1:abort_on_error=0:exitcode=86
export LSAN_OPTIONS=suppressions=$supp/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:suppressions=$supp/ubsan.supp
export TSAN_OPTIONS=halt_on_error=1:exitcode=86:suppressions=$supp/tsan.supp:second_deadlock_stack=1
ctest --test-dir $build --output-on-failure -j2 --timeout 1800 "$@"
