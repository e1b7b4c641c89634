#!/usr/bin/env bash
# Reproduces BENCHMARKS.md "## Engine": builds engine_bench in build-bench (only that target,
# -j2), then runs bench/compare_torch.py: for each (H, L), the engine grid (Forward and
# StepBatch), torch.nn.RNN and ONNX Runtime on the same shapes, all single-threaded, plus the
# machine's sgemm peak. Writes build-bench/engine_table.md (the tables, also on stdout) and
# build-bench/engine_results.json. About 6 minutes on 2 cores for RNN.
# --module gru lstm (issue 12, BENCHMARKS.md "## GRU and LSTM"): the GRU and LSTM grid instead
# (H 256 512 1024, L 1 2, N 1 8 64 256, T 1 10 100, StepBatch at N 1 8 64 256), against torch's
# nn.GRU/nn.LSTM and ORT's native GRU/LSTM ops; with --proj 256, 6 min 45 s on the 2-core EPYC
# of BENCHMARKS.md "## GRU and LSTM", ~15 min expected on the slower Xeon of "## Engine".
#
#   bash bench/run_engine_bench.sh                          # the table in BENCHMARKS.md
#   bash bench/run_engine_bench.sh --module gru lstm --proj 256   # "## GRU and LSTM"
#   bash bench/run_engine_bench.sh --clock cpu              # CPU time: for a busy machine
#   bash bench/run_engine_bench.sh --investigate            # + where the time goes (~+6 min)
#   bash bench/run_engine_bench.sh --H 256 --L 2 --no-ort   # a subset; see compare_torch.py -h
# Timings are only as good as the machine is quiet: check the load averages it prints.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
# Python with torch, numpy and grpcio (as CMake's RNNSERVE_PYTHON; Debian's by default).
python="${RNNSERVE_PYTHON:-/usr/bin/python3}"
build="${RNNSERVE_BENCH_BUILD:-build-bench}"

cmake -S . -B "$build" -G Ninja -DRNNSERVE_BUILD_SERVER=OFF -DRNNSERVE_BUILD_TESTS=OFF \
  -DRNNSERVE_BUILD_BENCH=ON >/dev/null
ninja -C "$build" -j2 engine_bench >&2

echo "run_engine_bench: $(uptime)" >&2
# OPENBLAS_CORETYPE (set in this environment for safety) would hold OpenBLAS, and so torch, to
# Haswell kernels; benchmarks run without it, tests never do.
env -u OPENBLAS_CORETYPE "$python" bench/compare_torch.py \
  --engine-bench "$build/bench/engine_bench" --onnx-dir "$build/onnx" --repetitions 3 \
  --out "$build/engine_table.md" --json-out "$build/engine_results.json" "$@"
echo "run_engine_bench: $(uptime)" >&2
