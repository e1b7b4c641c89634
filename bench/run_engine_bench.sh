#!/usr/bin/env bash
# Reproduces BENCHMARKS.md "## Engine": builds engine_bench in build-bench (only that target,
# -j2), then runs bench/compare_torch.py, which runs the engine grid (Forward and StepBatch, plus
# the sgemm peak), torch.nn.RNN and ONNX Runtime on the same shapes, all single-threaded.
# Writes build-bench/engine_table.md (the tables) and build-bench/engine_results.json.
#
#   bash bench/run_engine_bench.sh                       # the whole table (a few minutes)
#   bash bench/run_engine_bench.sh --H 256 --L 2 --no-ort  # extra flags go to compare_torch.py
#   RNNSERVE_BENCH_INVESTIGATE=1 bash bench/run_engine_bench.sh  # also the per-shape GEMM/tanh
#                                                                # micro-benchmarks
# Timings are only as good as the machine is quiet: check the load average it prints.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
build="${RNNSERVE_BENCH_BUILD:-build-bench}"

cmake -S . -B "$build" -G Ninja -DRNNSERVE_BUILD_SERVER=OFF -DRNNSERVE_BUILD_TESTS=OFF \
  -DRNNSERVE_BUILD_BENCH=ON >/dev/null
ninja -C "$build" -j2 engine_bench

echo "run_engine_bench: $(uptime)" >&2
# OPENBLAS_CORETYPE (set in this environment for safety) would hold OpenBLAS, and so torch, to
# Haswell kernels; benchmarks run without it, tests never do.
env -u OPENBLAS_CORETYPE /usr/bin/python3 bench/compare_torch.py \
  --engine-bench "$build/bench/engine_bench" --onnx-dir "$build/onnx" \
  --out "$build/engine_table.md" --json-out "$build/engine_results.json" "$@"

if [ "${RNNSERVE_BENCH_INVESTIGATE:-0}" = "1" ]; then
  env -u OPENBLAS_CORETYPE "$build/bench/engine_bench" --benchmark_min_time=0.1 \
    --benchmark_filter='^BM_(GemmShape|TanhShape)/' \
    --benchmark_out="$build/engine_shapes.json" --benchmark_out_format=json
fi
echo "run_engine_bench: $(uptime)" >&2
