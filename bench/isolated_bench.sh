#!/usr/bin/env bash
# The server against the in-process engine with the load generator on cores of its own: what a
# deployment sees, where clients run on other machines. On the 2-core development machine the
# client has to share the server's cores (BENCHMARKS.md "## Server"); this needs >= 4 cores.
#
# For each model and session count, on the same --server-cores (default 0-1, i.e. 2 cores):
#   engine:  inprocess_bench --mode engine --threads <server cores> (StepBatch alone)
#   server:  rnnserve --threads <server cores>, pinned to the server cores with all its gRPC
#            threads; rnnserve-client bench pinned to --client-cores (default 2-5)
# and prints one JSON line per run plus a summary table. Runs from a folder made by
# bench/make_bench_bundle.sh, with its own dynamic loader and libraries.
#
#   bash bench/isolated_bench.sh build-bundle [--sessions "64 1024"] [--duration 8]
#        [--models "rnn256x2 rnn512x3"] [--server-cores 0-1] [--client-cores 2-5]
set -euo pipefail
bundle="$(cd "$1" && pwd)"
shift
sessions="64 256 1024"
models="rnn256x2 rnn512x3"
duration=8
server_cores="0-1"
client_cores="2-5"
max_batch=256
while [ $# -gt 0 ]; do
  case "$1" in
    --sessions) sessions="$2"; shift 2 ;;
    --models) models="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --server-cores) server_cores="$2"; shift 2 ;;
    --client-cores) client_cores="$2"; shift 2 ;;
    *) echo "isolated_bench: unknown argument $1" >&2; exit 2 ;;
  esac
done

loader="$(ls "$bundle"/lib/ld-linux-x86-64.so.* | head -n1)"
run() {  # run CORES BINARY ARGS...: a bundled binary pinned to CORES
  local cores="$1" binary="$2"
  shift 2
  "$loader" --library-path "$bundle/lib" "$bundle/bin/taskset" -c "$cores" \
    "$loader" --library-path "$bundle/lib" "$bundle/bin/$binary" "$@"
}
threads=$(( $(echo "$server_cores" | awk -F- '{print ($2 == "" ? 1 : $2 - $1 + 1)}') ))
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

echo "isolated_bench: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs));" \
  "server and engine on cores $server_cores ($threads threads), client on $client_cores;" \
  "bundle $(cat "$bundle/REVISION" 2>/dev/null || echo '?')" >&2
results="$work/results.jsonl"
for model in $models; do
  for n in $sessions; do
    engine="$(run "$server_cores" inprocess_bench --repo "$bundle/models" --model "$model" \
      --sessions "$n" --mode engine --threads "$threads" --max_batch "$max_batch" \
      --chunk_steps 10 --duration 3 | grep '^{')"
    run "$server_cores" rnnserve --host 127.0.0.1 --port 0 --metrics_port 0 \
      --model_repository "$bundle/models" --threads "$threads" --max_batch "$max_batch" \
      >"$work/server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 600); do
      grep -q "listening on" "$work/server.log" && break
      sleep 0.1
    done
    address="$(grep -o 'listening on [0-9.]*:[0-9]*' "$work/server.log" | awk '{print $3}')"
    [ -n "$address" ] || { cat "$work/server.log" >&2; exit 1; }
    # A short warm-up, then the measured run.
    run "$client_cores" rnnserve-client --server "$address" --json bench "$model" \
      --sessions "$n" --chunk_steps 10 --duration 1 >/dev/null
    served="$(run "$client_cores" rnnserve-client --server "$address" --json bench "$model" \
      --sessions "$n" --chunk_steps 10 --duration "$duration" | grep '^{')"
    kill -TERM "$server_pid"
    wait "$server_pid" || true
    echo "{\"model\": \"$model\", \"sessions\": $n, \"engine\": $engine, \"server\": $served}" \
      | tee -a "$results"
  done
done
echo
echo "| model | sessions | engine timesteps/s | server timesteps/s | server / engine | p50 ms | p99 ms |"
echo "|---|---:|---:|---:|---:|---:|---:|"
field() {  # field LINE SECTION KEY: a number from the "engine" or "server" object of a line
  echo "$1" | sed -E "s/.*\"$2\": ?\\{[^}]*\"$3\": ?([0-9.e+]+).*/\\1/"
}
while read -r line; do
  model="$(echo "$line" | sed -E 's/.*"model": "([^"]*)".*"engine".*/\1/')"
  n="$(echo "$line" | sed -E 's/^\{"model": "[^"]*", "sessions": ([0-9]+).*/\1/')"
  engine="$(field "$line" engine timesteps_per_s)"
  served="$(field "$line" server timesteps_per_s)"
  p50="$(field "$line" server p50)"
  p99="$(field "$line" server p99)"
  awk -v m="$model" -v n="$n" -v e="$engine" -v v="$served" -v p50="$p50" -v p99="$p99" \
    'BEGIN { printf "| %s | %s | %.0f | %.0f | %.0f%% | %.2f | %.2f |\n", m, n, e, v, 100 * v / e, p50, p99 }'
done <"$results"
