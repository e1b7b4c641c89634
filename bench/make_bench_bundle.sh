#!/usr/bin/env bash
# Packs what bench/isolated_bench.sh needs into one self-contained folder (default
# build-bundle/): rnnserve, rnnserve-client and inprocess_bench built Release in build-sbench,
# every shared library they load plus Debian's dynamic loader (so the folder runs on another
# x86-64 Linux machine whatever its own libraries), taskset, and a model repository with the
# server benchmark's models (bench/server_bench.py's MODELS, exported with torch seed 0).
#
#   bash bench/make_bench_bundle.sh [OUT_DIR]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
# Python with torch, numpy and grpcio (as CMake's RNNSERVE_PYTHON; Debian's by default).
python="${RNNSERVE_PYTHON:-/usr/bin/python3}"
out="${1:-build-bundle}"
build="${RNNSERVE_SBENCH_BUILD:-build-sbench}"

bash bench/run_server_bench.sh --build-only >&2
inprocess="$(find "$build" -name inprocess_bench -type f -perm -u+x | head -n1)"
rm -rf "$out"
mkdir -p "$out/bin" "$out/lib" "$out/models"
cp "$build/server/rnnserve" "$build/client/rnnserve-client" "$inprocess" "$(command -v taskset)" \
  "$out/bin/"
for binary in "$out"/bin/*; do
  ldd "$binary" | awk '/=> \//{print $3} $1 ~ /^\/.*ld-linux/{print $1}'
done | sort -u | while read -r library; do cp -L "$library" "$out/lib/"; done
PYTHONPATH="$root/tools:$root/bench" "$python" - "$out/models" <<'PY'
import sys
import server_bench
server_bench.export_repository(sys.argv[1], ["rnn256x2", "rnn512x3"], seed=0)
PY
git rev-parse --short HEAD >"$out/REVISION"
du -sh "$out" >&2
