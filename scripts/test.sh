#!/usr/bin/env bash
# Build and run the whole qvlm test suite, as CI does:
#   1. a normal optimised build with warnings fatal, all tests;
#   2. an AddressSanitizer + UndefinedBehaviorSanitizer build (LeakSanitizer on), all tests;
#   3. the libFuzzer targets (clang), each run briefly, when clang is available.
# Installs missing Debian packages first. Usage: scripts/test.sh [--quick] (skip 2 and 3)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
jobs=$(nproc)
quick=0; [ "${1:-}" = "--quick" ] && quick=1

echo "== normal build (-Werror)"
cmake -S . -B build-ci -DCMAKE_BUILD_TYPE=Release -DQVLM_WERROR=ON >/dev/null
cmake --build build-ci -j "$jobs"
ctest --test-dir build-ci --output-on-failure -j "$jobs"
[ $quick = 1 ] && exit 0

echo "== ASan + UBSan build"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQVLM_WERROR=ON -DQVLM_SANITIZE=ON >/dev/null
cmake --build build-asan -j "$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j "$jobs" -LE slow

if command -v clang >/dev/null 2>&1; then
  echo "== fuzz targets (libFuzzer, brief)"
  CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQVLM_FUZZ=ON -DBUILD_TESTING=ON >/dev/null
  cmake --build build-fuzz -j "$jobs"
  ctest --test-dir build-fuzz --output-on-failure -L fuzz
fi
echo "== all tests passed"
