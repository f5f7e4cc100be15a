#!/bin/bash
# Builds the libFuzzer targets (fuzz/, clang, ASan + UBSan, in build-fuzz/) and
# runs each for SECONDS (default 60), seeded from tests/data, configs/, data/
# and fuzz/corpus/. The corpus each target grows is kept in build-fuzz/corpus
# for the next run; crashes, hangs and out-of-memory inputs are written to
# build-fuzz/crashes/<target>/ and make the script fail.
#   scripts/fuzz.sh [SECONDS] [TARGET...]     (TARGET: checkpoint, unpickler, module_pickle, text, config, annotations, image, npy, request)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(checkpoint unpickler module_pickle text config annotations image npy request)
build=build-fuzz

cmake -S . -B $build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ -DALBEF_FUZZ=ON \
  -DALBEF_BUILD_TESTS=OFF -DALBEF_BUILD_PYTHON=OFF > $build.configure.log 2>&1 || { cat $build.configure.log; exit 1; }
rm -f $build.configure.log
cmake --build $build --target fuzz_targets -j"${ALBEF_BUILD_JOBS:-2}" > /dev/null

seeds() {  # the seed files of one target (head may cut find short)
  set +o pipefail
  case $1 in
    checkpoint) find tests/data -name '*.pth' -size -256k ;;
    unpickler) find tests/data -name '*.p' ;;
    text) ;;
    config) find configs tests/data -name '*.yaml' -o -name 'config_bert*.json' ;;
    annotations) find data tests/data -name '*.json' -size -64k ;;
    image) find tests/data/images -size -32k -type f ;;
    npy) find tests/data -name '*.npy' -size -8k | head -n 40 ;;
  esac
  [ -d fuzz/corpus/$1 ] && find fuzz/corpus/$1 -type f
  return 0
}

printf '%-12s %8s %12s %8s %8s\n' target seconds executions corpus crashes | tee $build/fuzz-summary.txt
failed=0
for target in "${targets[@]}"; do
  corpus=$build/corpus/$target crashes=$build/crashes/$target
  mkdir -p "$corpus" "$crashes"
  seeds "$target" | while read -r f; do cp "$f" "$corpus/seed-$(echo "$f" | tr '/' '_')"; done
  dict=()
  case $target in checkpoint|unpickler|module_pickle) dict=(-dict=fuzz/pickle.dict) ;; esac
  log=$build/fuzz-$target.log
  # -rss_limit_mb: a reader that allocates what a hostile header asks for is a finding, not a slow run.
  LSAN_OPTIONS=suppressions=$PWD/fuzz/lsan.supp:print_suppressions=0 \
    $build/fuzz/fuzz_$target "$corpus" "${dict[@]}" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -max_len=262144 -print_final_stats=1 -artifact_prefix="$crashes/" > "$log" 2>&1 || true
  executions=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  found=$(find "$crashes" -type f | wc -l)
  printf '%-12s %8s %12s %8s %8s\n' "$target" "$seconds" "${executions:-0}" "$(ls "$corpus" | wc -l)" "$found" \
    | tee -a $build/fuzz-summary.txt
  if [ "$found" -gt 0 ]; then failed=1; grep -m3 -E 'ERROR|SUMMARY|let a non-albef' "$log" | sed 's/^/    /'; fi
done
[ $failed -eq 0 ] || { echo "fuzzing found inputs that crash, hang or exhaust memory: $build/crashes/ (logs: $build/fuzz-*.log)"; exit 1; }
