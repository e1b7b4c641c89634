#!/usr/bin/env bash
# The Quick start's main job: installs what is missing, builds, starts rnnserve with the
# built-in demo model (the seed notebook's RNN(100, 10, num_layers=2)) on a free loopback port,
# streams a random sequence in chunks with rnnserve-client, printing `out` and `h` for each
# chunk, and stops the server.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

bash scripts/install-deps.sh >/dev/null
export CCACHE_DIR="$root/build/.ccache"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target rnnserve rnnserve-client

log="$(mktemp -d)/rnnserve.log"
build/server/rnnserve --host 127.0.0.1 --port 0 --metrics_port 0 >"$log" 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
address=""
for _ in $(seq 100); do
  address=$(grep -o 'listening on [0-9.]*:[0-9]*' "$log" | cut -d' ' -f3 || true)
  [ -n "$address" ] && break
  kill -0 $server 2>/dev/null || { cat "$log"; exit 1; }
  sleep 0.1
done
[ -n "$address" ] || { echo "rnnserve did not start:"; cat "$log"; exit 1; }
echo "rnnserve is serving the demo model on $address"
build/client/rnnserve-client --server "$address" info demo
build/client/rnnserve-client --server "$address" stream demo --steps 12 --batch 1 --chunk_steps 4 --seed 1 --end
