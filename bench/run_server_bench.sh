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
#   bash bench/run_server_bench.sh --no-memory --models lstm256x2 --sessions 1,64,1024
#                                                       # issue 12's LSTM(256, 256, 2) (~2 min)
#   bash bench/run_server_bench.sh --headline [--quick] # only bench/streams_per_core.py: live
#                          # LSTM(80, 512, 3) streams per core at 100 frames/s (~3 min; ~1 quick)
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
headline=0
args=()
for arg in "$@"; do
  case "$arg" in
    --no-memory) memory=0 ;;
    --build-only) build_only=1 ;;
    --headline) headline=1 ;;
    *) args+=("$arg") ;;
  esac
done

cmake -S . -B "$build" -G Ninja -DRNNSERVE_BUILD_TESTS=OFF >/dev/null
# inprocess_bench links the serving layer alone (bench/CMakeLists.txt): the in-process column.
cmake --build "$build" -j2 --target rnnserve rnnserve-client inprocess_bench
inprocess="$build/bench/inprocess_bench"

[ "$build_only" = 1 ] && exit 0

echo "run_server_bench: $(uptime)" >&2
if [ "$headline" = 1 ]; then
  "$python" bench/streams_per_core.py --rnnserve "$build/server/rnnserve" \
    --client "$build/client/rnnserve-client" --out "$build/streams_per_core.md" \
    --json-out "$build/streams_per_core.json" "${args[@]}"
  echo "run_server_bench: $(uptime)" >&2
  exit 0
fi
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
