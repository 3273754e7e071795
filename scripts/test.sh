#!/usr/bin/env bash
# Runs every test of i3rt on a fresh machine (README's second command; .ci/run calls it):
#   1. set-up (Debian packages, Python reference venv)          scripts/setup.sh
#   2. Release build + the whole CTest suite, PyTorch reference checks included
#   3. the same suite built with AddressSanitizer + UndefinedBehaviorSanitizer (fixtures reused)
#   4. each libFuzzer target for a bounded time (I3RT_FUZZ_SECONDS, default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
jobs=$(nproc)
fuzz_seconds=${I3RT_FUZZ_SECONDS:-30}

scripts/setup.sh
venv="${I3RT_VENV:-$HOME/.cache/i3rt/venv}"

echo "== release build and tests"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DI3RT_PYTHON="$venv/bin/python" >/dev/null
ninja -C build
ctest --test-dir build --output-on-failure -j 1

echo "== AddressSanitizer + UndefinedBehaviorSanitizer build and tests"
# RelWithDebInfo: optimized like the release build (the whole-case predict parity stays minutes, not an
# hour), with line numbers in the sanitizers' reports.
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DI3RT_SANITIZE=ON -DI3RT_BENCH=OFF \
  -DI3RT_PYTHON="$venv/bin/python" -DI3RT_FIXTURES="$root/build/fixtures" >/dev/null
ninja -C build-asan
# The fixtures are the release build's (-E '^gen_' with -FS: no generator runs again).
# Criterion runs each test in a child process and does not fail a test whose child reports a leak
# or a sanitizer error on its way out, so the log itself is checked as well.
asan_log=build-asan/ctest-sanitizers.log
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure -V -j 1 -E '^gen_' --fixture-exclude-setup '.*' >"$asan_log" 2>&1 ||
  { tail -n 200 "$asan_log"; exit 1; }
grep -E "tests passed|tests failed" "$asan_log" | tail -n 1
if grep -nE "ERROR: (Address|Leak)Sanitizer|runtime error:" "$asan_log"; then
  echo "sanitizer reports in $asan_log (above)"
  exit 1
fi

echo "== fuzzing (${fuzz_seconds} s per target)"
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=Debug -DI3RT_FUZZ=ON -DI3RT_TESTS=OFF \
  -DI3RT_BENCH=OFF >/dev/null
ninja -C build-fuzz
for fuzzer in build-fuzz/fuzz/fuzz_*; do
  [ -x "$fuzzer" ] || continue
  name=$(basename "$fuzzer")
  corpus="$root/build-fuzz/corpus-$name"
  mkdir -p "$corpus"
  seeds="$root/fuzz/corpus/${name#fuzz_}"
  echo "-- $name"
  "$fuzzer" -max_total_time="$fuzz_seconds" -print_final_stats=1 "$corpus" $( [ -d "$seeds" ] && echo "$seeds" ) \
    2>&1 | tail -n 12
done
echo "all tests passed"
