#!/usr/bin/env bash
# Soak test: --sessions sessions (1024) for --minutes minutes (30) against a real rnnserve,
# with random starts, ends, closes, cancelled streams and duplicates (bench/soak.py). Records
# the server's RSS, p99 chunk latency, chunks and rnnserve_sessions_active every 10 s to a CSV
# (build/soak/soak-<minutes>min.csv) and prints each row. Exits non-zero unless
# sessions_active returns to 0 once every session is closed, RSS is flat after warm-up (last
# third's max <= 1.10 x first third's max + 8 MiB; see bench/soak.py), no request failed
# unexpectedly and the server exits cleanly.
#
#   bash bench/soak.sh                      # 30 minutes, 1024 sessions (BENCHMARKS.md "Soak")
#   bash bench/soak.sh --minutes 2          # the CI run (scripts/test.sh)
#   RNNSERVE_BIN=path/to/rnnserve bash bench/soak.sh ...   # a binary already built
# Other flags go to bench/soak.py (--workers, --interval, --warmup, --rss_slack_mib, --flags).
# Without RNNSERVE_BIN it builds rnnserve in build/ (Release; only that target).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
python="${RNNSERVE_PYTHON:-/usr/bin/python3}"  # Debian's: numpy and grpcio

minutes=30
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --minutes=*) minutes="${1#--minutes=}"; shift ;;
    *) args+=("$1"); shift ;;
  esac
done

if [ -z "${RNNSERVE_BIN:-}" ]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build -j"${JOBS:-2}" --target rnnserve
  export RNNSERVE_BIN="$root/build/server/rnnserve"
fi
mkdir -p build/soak
echo "soak: $(nproc) CPUs; $(uptime)"
exec "$python" bench/soak.py --minutes "$minutes" --csv "build/soak/soak-${minutes}min.csv" \
  ${args[@]+"${args[@]}"}
