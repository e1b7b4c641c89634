#!/usr/bin/env bash
# Builds the libFuzzer targets (tools/fuzz) with clang-14 in build/fuzz/ and runs each for a
# bounded time: the model-file parsers (safetensors, config.json, serving.json), starting from a seed corpus
# generated from real exported models, and sequences of session operations on the serving core
# (session_ops), starting from its checked-in corpus (tools/fuzz/corpus/session_ops/, which
# ctest also replays, as it replays the parsers' checked-in seeds in tools/fuzz/corpus/). The corpus grows across runs (build/fuzz/corpus/); crashes land in
# build/fuzz/artifacts/ and make the script fail. build/fuzz/ is its own configure
# (RNNSERVE_FUZZ=ON; tests, server and benchmarks off) that compiles everything with libFuzzer
# coverage, ASan and UBSan, so the fuzzers link rnnserve_engine itself.
#
#   scripts/fuzz.sh                # 60 s per target
#   scripts/fuzz.sh 600            # 10 minutes per target
#   JOBS=4 scripts/fuzz.sh         # build parallelism (default 2)
#   TARGETS=session_ops scripts/fuzz.sh 36000   # one target for 10 hours (docs/testing.md)
#   (session_ops_lstm: the same operations on an LSTM with proj_size, from the same corpus)
#
# Reproduce a finding: build/fuzz/tools/fuzz/safetensors_fuzz build/fuzz/artifacts/crash-...
set -euo pipefail

seconds="${1:-60}"
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${FUZZ_BUILD_DIR:-$root/build/fuzz}"
fuzz_src="$root/tools/fuzz"
python=/usr/bin/python3  # Debian's, with torch and numpy

CXX=clang++-14 cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DRNNSERVE_FUZZ=ON -DRNNSERVE_BUILD_TESTS=OFF -DRNNSERVE_BUILD_SERVER=OFF \
  -DRNNSERVE_BUILD_BENCH=OFF >/dev/null
targets="${TARGETS:-safetensors config_json serving_json session_ops session_ops_lstm}"
cmake --build "$build" --target $(for t in $targets; do echo "${t}_fuzz"; done) -j "${JOBS:-2}"

# Seeds: real exports (a demo model, small variants) plus F16/BF16 files written by the same
# exporter, so the fuzzer starts from inputs that get past the JSON and into every check.
seeds="$build/seeds"
rm -rf "$seeds"
mkdir -p "$seeds/safetensors" "$seeds/config_json" "$seeds/serving_json" \
  "$build/corpus/safetensors" "$build/corpus/config_json" "$build/corpus/serving_json" \
  "$build/corpus/session_ops" "$build/corpus/session_ops_lstm" \
  "$build/artifacts"
"$python" - "$root/tools" "$seeds" <<'PY'
import os, shutil, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import torch
import export_pytorch

seeds = sys.argv[2]
torch.manual_seed(0)
models = {
    "demo": torch.nn.RNN(100, 10, num_layers=2),
    "small": torch.nn.RNN(3, 2),
    "bidir_nobias_relu": torch.nn.RNN(3, 2, num_layers=2, bidirectional=True, bias=False,
                                      nonlinearity="relu", batch_first=True, dropout=0.5),
    "gru": torch.nn.GRU(3, 2, num_layers=2, bidirectional=True),
    "lstm_proj": torch.nn.LSTM(3, 4, proj_size=2, num_layers=2, bias=False),
}
for name, rnn in models.items():
    folder = os.path.join(seeds, "models", name)
    export_pytorch.export_module(rnn, folder)
    shutil.copy(os.path.join(folder, "model.safetensors"), os.path.join(seeds, "safetensors", name))
    shutil.copy(os.path.join(folder, "config.json"), os.path.join(seeds, "config_json", name))
values = np.array([1.0, -2.5, 6e-8, -0.0, np.inf, np.nan], dtype=np.float32)
export_pytorch.write_safetensors(os.path.join(seeds, "safetensors", "f16_bf16"), {
    "half": values.astype(np.float16), "bf": torch.tensor(values).to(torch.bfloat16),
    "empty": np.zeros((0, 3), np.float32), "scalar": np.float32(1.5)})
with open(os.path.join(seeds, "config_json", "minimal"), "w") as f:
    f.write('{"input_size": 1, "hidden_size": 1}')
PY

status=0
for target in $targets; do
  echo "== ${target}_fuzz for ${seconds}s"
  # New inputs go to the first folder (build/fuzz/corpus/); the seeds are only read.
  if [ "$target" = session_ops ] || [ "$target" = session_ops_lstm ]; then
    inputs=("$fuzz_src/corpus/session_ops")
  else
    inputs=("$seeds/$target" "$fuzz_src/corpus/$target" -dict="$fuzz_src/$target.dict")
  fi
  # Not `set -e` for the fuzzer: report every target, then fail.
  "$build/tools/fuzz/${target}_fuzz" "$build/corpus/$target" "${inputs[@]}" \
    -max_total_time="$seconds" -timeout=10 \
    -artifact_prefix="$build/artifacts/${target}-" -print_final_stats=1 2>"$build/${target}_fuzz.log" ||
    status=$?
  grep -E "DONE|^==[0-9]+==ERROR|^SUMMARY|^artifact_prefix|Test unit written|check failed" \
    "$build/${target}_fuzz.log" || true
done
if [ "$status" -ne 0 ]; then
  echo "fuzz.sh: a fuzzer failed (exit $status); see build/fuzz/*_fuzz.log and build/fuzz/artifacts/" >&2
fi
exit "$status"
