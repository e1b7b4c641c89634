#!/usr/bin/env bash
# Installs the Debian 12 packages (and the npm tools) that rnnserve's build, tests, benchmarks
# and deployment checks need. Idempotent: it only calls apt-get when a package is missing, so a
# second run costs a few dpkg queries. Run as root (or with sudo).
#
#   scripts/install-deps.sh                  # everything (same as --profile all)
#   scripts/install-deps.sh --profile build  # only what compiling the server and clients needs
#                                            # (no tests, benchmarks, Python, deploy tools, npm):
#                                            # the container image's builder stage uses this
#   RNNSERVE_SKIP_NPM=1 scripts/...          # skip the npm tools (buf, onnxruntime-node,
#                                            # kubernetes-models)
set -euo pipefail

profile=all
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="${2:-}"; shift 2 || { echo "install-deps: --profile needs a value" >&2; exit 2; } ;;
    --profile=*) profile="${1#--profile=}"; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "install-deps: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done

# The C++ build of the server and clients (Release, no tests or benchmarks).
build_packages=(
  # toolchain and build cache
  build-essential cmake ninja-build pkg-config ccache
  # C++ libraries
  libgrpc++-dev libgrpc-dev protobuf-compiler protobuf-compiler-grpc libprotobuf-dev
  libabsl-dev libeigen3-dev prometheus-cpp-dev nlohmann-json3-dev
  # OpenSSL: token hashing and TLS file checks (server/auth)
  libssl-dev
)
# Everything else a developer or CI machine needs.
more_packages=(
  git ca-certificates
  # test and benchmark libraries, BLAS
  libgtest-dev libgmock-dev libbenchmark-dev libopenblas-dev libopenblas0-pthread
  # the TLS tests make their certificates with the openssl CLI
  openssl
  # sanitizers and fuzzing
  clang-14 libclang-rt-14-dev
  # Python oracle, tests and client (for /usr/bin/python3)
  python3 python3-torch python3-grpcio python3-numpy python3-protobuf python3-yaml
  # installing the Python client as a package (tests/client/test_python_package.py)
  python3-venv python3-setuptools python3-pip python3-wheel
  # deployment checks and tools
  nginx-core yamllint buildah podman debootstrap curl procps
)

case "$profile" in
  all) packages=("${build_packages[@]}" "${more_packages[@]}")
       # Node.js and npm: Debian's own, unless a node with npm is already there (NodeSource's
       # nodejs bundles npm and conflicts with Debian's npm package).
       if ! command -v npm >/dev/null 2>&1; then packages+=(nodejs npm); fi ;;
  build) packages=("${build_packages[@]}"); RNNSERVE_SKIP_NPM=1 ;;
  *) echo "install-deps: unknown profile '$profile' (all, build)" >&2; exit 2 ;;
esac

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
  echo "install-deps: all Debian packages of profile '$profile' present"
fi

# npm tools live in the project, not globally: tools/node/node_modules (git-ignored).
if [ "${RNNSERVE_SKIP_NPM:-0}" != "1" ]; then
  root="$(cd "$(dirname "$0")/.." && pwd)"
  npm_dir="$root/tools/node"
  if [ ! -x "$npm_dir/node_modules/.bin/buf" ] || [ ! -d "$npm_dir/node_modules/onnxruntime-node" ] \
     || [ ! -d "$npm_dir/node_modules/kubernetes-models" ]; then
    echo "install-deps: installing npm tools into $npm_dir"
    (cd "$npm_dir" && npm install --ignore-scripts --no-audit --no-fund --no-package-lock)
  fi
fi
