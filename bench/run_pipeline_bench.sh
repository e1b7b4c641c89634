#!/usr/bin/env bash
# Reproduces BENCHMARKS.md "## Pipelines: the head's cost (issue 13)": builds engine_bench in
# build-bench (only that target, -j2), runs BM_PipelineStepBatch (LSTM(256, 256, 2) alone, with
# a Linear(256, 40) head, with a Linear-ReLU-Linear-LogSoftmax head, with a Linear(80, 256)+ReLU
# input layer; 1, 64 and 1024 sessions; 1 and 16 steps per session per call) and prints the
# markdown table. Writes build-bench/pipeline_results.json. About 75 s on 2 cores.
#
#   bash bench/run_pipeline_bench.sh                 # thread CPU time (robust to a busy machine)
#   bash bench/run_pipeline_bench.sh --clock wall    # wall-clock time, for a quiet machine
# Timings are only as good as the machine is quiet: check the load averages it prints.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
python="${RNNSERVE_PYTHON:-/usr/bin/python3}"
build="${RNNSERVE_BENCH_BUILD:-build-bench}"
clock=cpu
if [[ "${1:-}" == "--clock" ]]; then clock="$2"; fi

cmake -S . -B "$build" -G Ninja -DRNNSERVE_BUILD_SERVER=OFF -DRNNSERVE_BUILD_TESTS=OFF \
  -DRNNSERVE_BUILD_BENCH=ON >/dev/null
ninja -C "$build" -j2 engine_bench >&2

echo "run_pipeline_bench: $(uptime)" >&2
env -u OPENBLAS_CORETYPE "$build/bench/engine_bench" --peak_gflops=0 --pipeline_clock="$clock" \
  --benchmark_filter=BM_PipelineStepBatch --benchmark_min_time=0.3 \
  --benchmark_out="$build/pipeline_results.json" --benchmark_out_format=json >&2
echo "run_pipeline_bench: $(uptime)" >&2

"$python" - "$build/pipeline_results.json" <<'EOF'
import json, re, sys
runs = {}
for b in json.load(open(sys.argv[1]))["benchmarks"]:
    p, s, t = map(int, re.search(r"P:(\d+)/S:(\d+)/T:(\d+)", b["name"]).groups())
    runs[p, s, t] = b
names = ("core + Linear(256, 40)", "core + MLP head", "Linear(80, 256)+ReLU + core")
for t in (1, 16):
    print("\nStepBatch, %d step%s per session per call; us per session-step, stage = the head "
          "or input layer alone, share = stage / pipeline:\n" % (t, "" if t == 1 else "s"))
    print("| sessions | core alone | " + " | ".join("%s | stage | share" % n for n in names) + " |")
    print("|---:" * 11 + "|")
    for s in (1, 64, 1024):
        cells = ["%.2f" % runs[0, s, t]["us_per_session_step"]]
        for p in (1, 2, 3):
            b = runs[p, s, t]
            cells += ["%.2f" % b["us_per_session_step"], "%.2f" % b["stage_us_per_session_step"],
                      "%.1f%%" % (100 * b["stage_share"])]
        print("| %d | %s |" % (s, " | ".join(cells)))
EOF
