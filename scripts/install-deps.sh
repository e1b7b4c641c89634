#!/usr/bin/env bash
# Installs every Debian 12 package (and the two npm tools) that rnnserve's build, tests,
# benchmarks and deployment checks need. Idempotent: it only calls apt-get when a package
# is missing, so a second run costs a few dpkg queries. Run as root (or with sudo).
#
#   scripts/install-deps.sh            # everything
#   RNNSERVE_SKIP_NPM=1 scripts/...    # skip the npm tools (buf, onnxruntime-node)
set -euo pipefail

packages=(
  # toolchain and build cache
  build-essential cmake ninja-build pkg-config ccache git ca-certificates
  # C++ libraries
  libgrpc++-dev libgrpc-dev protobuf-compiler protobuf-compiler-grpc libprotobuf-dev
  libabsl-dev libeigen3-dev prometheus-cpp-dev libgtest-dev libgmock-dev
  libbenchmark-dev nlohmann-json3-dev libopenblas-dev libopenblas0-pthread
  # sanitizers and fuzzing
  clang-14 libclang-rt-14-dev
  # Python oracle, tests and client (for /usr/bin/python3)
  python3 python3-torch python3-grpcio python3-numpy python3-protobuf python3-yaml
  # deployment checks and tools
  nginx-core yamllint buildah podman debootstrap curl procps
)
# Node.js and npm: Debian's own, unless a node with npm is already there (NodeSource's nodejs
# bundles npm and conflicts with Debian's npm package).
if ! command -v npm >/dev/null 2>&1; then packages+=(nodejs npm); fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all Debian packages present"
fi

# npm tools live in the project, not globally: tools/node/node_modules (git-ignored).
if [ "${RNNSERVE_SKIP_NPM:-0}" != "1" ]; then
  root="$(cd "$(dirname "$0")/.." && pwd)"
  npm_dir="$root/tools/node"
  if [ ! -x "$npm_dir/node_modules/.bin/buf" ] || [ ! -d "$npm_dir/node_modules/onnxruntime-node" ]; then
    echo "install-deps: installing npm tools into $npm_dir"
    (cd "$npm_dir" && npm install --ignore-scripts --no-audit --no-fund --no-package-lock)
  fi
fi
