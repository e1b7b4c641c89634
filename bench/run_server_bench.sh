#!/usr/bin/env bash
# Reproduces BENCHMARKS.md "## Server": builds rnnserve, rnnserve-client and inprocess_bench in
# build-sbench (only those targets, -j2), then runs bench/server_bench.py (throughput/latency
# table: rnnserve vs the Python reference server vs the in-process engine) and, unless
# --no-memory, bench/memory_bench.py (100,000 idle sessions). Everything listens on 127.0.0.1.
# Writes build-sbench/server_table.md, build-sbench/server_results.json and
# build-sbench/memory_results.json.
#
#   bash bench/run_server_bench.sh                      # the whole run (about 10 minutes)
#   bash bench/run_server_bench.sh --quick --no-memory  # a smoke run (a few minutes)
#   bash bench/run_server_bench.sh --build-only         # just build the three binaries
#   bash bench/run_server_bench.sh --sessions 1,64 --duration 3 --models rnn256x2
#                                                       # other flags go to server_bench.py
# Timings are only as good as the machine is quiet: the tables record the load average.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
# Python with torch, numpy and grpcio (as CMake's RNNSERVE_PYTHON; Debian's by default).
python="${RNNSERVE_PYTHON:-/usr/bin/python3}"
build="${RNNSERVE_SBENCH_BUILD:-build-sbench}"

memory=1
build_only=0
args=()
for arg in "$@"; do
  case "$arg" in
    --no-memory) memory=0 ;;
    --build-only) build_only=1 ;;
    *) args+=("$arg") ;;
  esac
done

cmake -S . -B "$build" -G Ninja -DRNNSERVE_BUILD_TESTS=OFF >/dev/null
if ninja -C "$build" -t targets all 2>/dev/null | grep -q '^inprocess_bench:'; then
  # bench/CMakeLists.txt builds it.
  cmake --build "$build" -j2 --target rnnserve rnnserve-client inprocess_bench
  inprocess="$(find "$build" -name inprocess_bench -type f -perm -u+x | head -n1)"
else
  # Not (yet) in bench/CMakeLists.txt: a two-line CMake project links it against the
  # rnnserve_core library of the main build.
  cmake --build "$build" -j2 --target rnnserve rnnserve-client rnnserve_core
  mini="$build/inprocess"
  mkdir -p "$mini"
  cat >"$mini/CMakeLists.txt" <<EOF
cmake_minimum_required(VERSION 3.22)
project(inprocess_bench CXX)
set(CMAKE_CXX_STANDARD 17)
set(CMAKE_BUILD_TYPE Release)
add_compile_options(-O3 -march=native)
find_package(Eigen3 3.4 CONFIG REQUIRED)
find_package(absl CONFIG REQUIRED)
add_library(rnnserve_core STATIC IMPORTED)
set_target_properties(rnnserve_core PROPERTIES
  IMPORTED_LOCATION "$root/$build/core/librnnserve_core.a"
  INTERFACE_INCLUDE_DIRECTORIES "$root")
target_link_libraries(rnnserve_core INTERFACE Eigen3::Eigen absl::status absl::statusor
  absl::strings absl::span absl::synchronization absl::time absl::str_format)
add_executable(inprocess_bench "$root/bench/inprocess_bench.cc")
find_package(Threads REQUIRED)
target_link_libraries(inprocess_bench PRIVATE rnnserve_core Threads::Threads)
EOF
  cmake -S "$mini" -B "$mini/build" -G Ninja >/dev/null
  cmake --build "$mini/build" -j2
  inprocess="$mini/build/inprocess_bench"
fi

[ "$build_only" = 1 ] && exit 0

echo "run_server_bench: $(uptime)" >&2
# OPENBLAS_CORETYPE (set in this environment for safety) would hold torch to Haswell kernels.
env -u OPENBLAS_CORETYPE "$python" bench/server_bench.py \
  --rnnserve "$build/server/rnnserve" --client "$build/client/rnnserve-client" \
  --inprocess "$inprocess" --out "$build/server_table.md" \
  --json-out "$build/server_results.json" "${args[@]}"
if [ "$memory" = 1 ]; then
  "$python" bench/memory_bench.py --rnnserve "$build/server/rnnserve" \
    --json-out "$build/memory_results.json"
fi
echo "run_server_bench: $(uptime)" >&2
