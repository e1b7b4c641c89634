#!/usr/bin/env bash
# Installs what is missing, builds everything and runs every check rnnserve has:
#   1. Release build; ctest: unit tests, the live-PyTorch parity suite, server integration
#      tests against the real binary, deployment tests (dashboard metrics, 3 replicas behind
#      nginx, manifest validation);
#   2. clang's thread-safety analysis over core/ and server/ (as errors), and a client-only
#      build with no Eigen (the layering as a build);
#   3. the same unit, parity and in-process server tests built with ASan + UBSan, and the
#      Python integration suite (tests/server) against the sanitized rnnserve binary;
#   4. the serving core's unit tests, the session-operations corpus and the in-process server
#      tests built with ThreadSanitizer (against a TSan-built copy of Debian's abseil);
#   5. a short libFuzzer run of each target (the parsers, sequences of session operations);
#   6. a 2-minute soak: 1024 sessions against the real server, RSS flat and no session left;
#   7. the container image: built with buildah and smoke-tested (deploy/check-image.sh).
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

echo "== ThreadSanitizer build (core/serving unit tests, session_ops corpus, in-process server)"
# Only these targets: the engine's single-threaded tests and the Python suite add nothing here.
# absl::Mutex synchronises inside libabsl, which Debian ships uninstrumented: TSan would report
# every guarded access as a race. scripts/tsan-abseil.sh builds Debian's own abseil source with
# TSan once (build/tsan/abseil, reused while libabsl-dev's version stays the same).
bash scripts/tsan-abseil.sh "$root/build/tsan/abseil"
CXX=clang++-14 cmake -S . -B build/tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DRNNSERVE_SANITIZE_THREAD=ON -DRNNSERVE_BUILD_BENCH=OFF \
  -DCMAKE_PREFIX_PATH="$root/build/tsan/abseil"
tsan_tests=(core/serving/serving_core_test core/serving/batch_scheduler_test
            core/serving/session_table_test core/serving/session_security_test
            core/serving/model_lifecycle_test rnn_service_test)
cmake --build build/tsan -j"$jobs" --target session_ops_replay session_ops_lstm_replay \
  "${tsan_tests[@]##*/}"
# tests/tsan.supp names third-party internals only (abseil's Mutex, gRPC's hand-overs): see its
# comments; never our code.
export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$root/tests/tsan.supp"
for test in "${tsan_tests[@]}"; do
  echo "-- $test"
  "build/tsan/tests/$test" --gtest_brief=1
done
build/tsan/tests/tools/session_ops_replay tools/fuzz/corpus/session_ops
build/tsan/tests/tools/session_ops_lstm_replay tools/fuzz/corpus/session_ops
unset TSAN_OPTIONS

echo "== Fuzzing (bounded: FUZZ_SECONDS per target, 60 by default)"
bash scripts/fuzz.sh "${FUZZ_SECONDS:-60}"

echo "== Soak (SOAK_MINUTES, 2 by default: 1024 sessions against the Release server)"
# bench/soak.sh fails unless sessions_active returns to 0 and RSS stays flat after warm-up.
RNNSERVE_BIN="$root/build/server/rnnserve" bash bench/soak.sh --minutes "${SOAK_MINUTES:-2}"

echo "== Container image"
bash deploy/check-image.sh

echo "== All checks passed"
