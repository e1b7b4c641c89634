#!/usr/bin/env bash
# Installs what is missing, builds everything and runs every check rnnserve has:
#   1. Release build; ctest: unit tests, the live-PyTorch parity suite, server integration
#      tests against the real binary, deployment tests (dashboard metrics, 3 replicas behind
#      nginx, manifest validation);
#   2. clang's thread-safety analysis over core/ and server/ (as errors), and a client-only
#      build with no Eigen (the layering as a build);
#   3. the same unit, parity and in-process server tests built with ASan + UBSan, and the
#      Python integration suite (tests/server) against the sanitized rnnserve binary;
#   4. a short libFuzzer run of each parser;
#   5. the container image: built with buildah and smoke-tested (deploy/check-image.sh).
# Build caches (ccache) live inside build/, so a second run rebuilds only what changed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

jobs=$(nproc)
bash scripts/install-deps.sh
export CCACHE_DIR="$root/build/.ccache"
export CCACHE_MAXSIZE=5G

echo "== Release build"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$jobs"

echo "== Tests (Release)"
ctest --test-dir build --output-on-failure --no-tests=error -j"$jobs" --timeout 900

echo "== Thread-safety analysis (clang -Wthread-safety, as errors, over core/ and server/)"
# The lock annotations (ABSL_GUARDED_BY and friends) are checks, not comments: any access to
# guarded state without its lock fails this build.
CXX=clang++-14 cmake -S . -B build/tsa -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DRNNSERVE_THREAD_SAFETY=ON -DRNNSERVE_BUILD_TESTS=OFF -DRNNSERVE_BUILD_BENCH=OFF
cmake --build build/tsa -j"$jobs"

echo "== Client-only build (base, proto and the client, with Eigen hidden from CMake)"
# The layering as a build: the client links the wire side only, so it builds with no Eigen and
# no engine at all.
cmake -S . -B build/client-only -G Ninja -DCMAKE_BUILD_TYPE=Release -DRNNSERVE_BUILD_ENGINE=OFF \
  -DCMAKE_DISABLE_FIND_PACKAGE_Eigen3=ON
cmake --build build/client-only -j"$jobs"

echo "== Sanitizer build (ASan + UBSan)"
cmake -S . -B build/asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRNNSERVE_SANITIZE=ON \
  -DRNNSERVE_BUILD_BENCH=OFF
cmake --build build/asan -j"$jobs"
# The integration label runs the real server under the sanitizers: the Python tests start the
# sanitized rnnserve, which inherits these options, so a leak or UB at exit fails its test.
# tests/lsan.supp lists third-party leaks only (OpenSSL's, at gRPC's TLS teardown).
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
LSAN_OPTIONS="suppressions=$root/tests/lsan.supp:print_suppressions=0" \
  ctest --test-dir build/asan --output-on-failure --no-tests=error -j"$jobs" \
  -L 'unit|parity|integration' --timeout 900

echo "== Fuzzing (bounded)"
bash scripts/fuzz.sh "${FUZZ_SECONDS:-30}"

echo "== Container image"
bash deploy/check-image.sh

echo "== All checks passed"
